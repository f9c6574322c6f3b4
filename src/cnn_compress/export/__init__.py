"""Deployable artifacts: ONNX, ONNX Runtime INT8, TensorRT engines."""
