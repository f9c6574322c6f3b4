"""Run any artifact as a predict function: torch eager, torch.export, ONNX Runtime, TensorRT."""
