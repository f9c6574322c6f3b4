"""Unstructured and structured pruning, before or after quantization."""
