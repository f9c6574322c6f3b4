"""TensorRT engines: build from ONNX and run, with the TensorRT 10/11 Python API.

Optional: ``pip install 'cnn-compress[tensorrt]'`` on a machine with an NVIDIA GPU. Nothing here
is imported unless a ``tensorrt_*`` format is asked for, and :func:`unavailable` says why those
formats cannot run on this machine before any work starts.

Precision comes from the ONNX model, not from builder flags: networks are strongly typed (the only
mode in TensorRT 11, an opt-in flag in 10), so an FP16 ONNX model gives an FP16 engine and a Q/DQ
model with symmetric, zero-point-0 INT8 gives an INT8 engine (explicit quantization). I/O uses
the name-based tensor API and ``execute_async_v3`` on a torch CUDA stream; buffers are torch
tensors, so no pycuda is needed.

Written against the documented API; it has not been run here (no GPU, no TensorRT wheel).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnn_compress.core.errors import CheckpointError, UnsupportedFormatError


def unavailable() -> str | None:
    """Why TensorRT cannot run here, or None."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the 'tensorrt' package is not installed (pip install 'cnn-compress[tensorrt]')"
    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU and torch sees none"
    return None


def _trt() -> Any:
    if reason := unavailable():
        raise UnsupportedFormatError(f"tensorrt: {reason}")
    import tensorrt

    return tensorrt


@dataclass(frozen=True)
class Profile:
    """The input shapes an engine accepts: batch in [1, max_batch], tuned for ``opt_batch``."""

    chw: tuple[int, ...]
    opt_batch: int
    max_batch: int


def build_engine(onnx_path: Path, profile: Profile, workspace_mb: int) -> bytes:
    """Parse ONNX into a strongly typed network and return the serialized engine."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UnsupportedFormatError(f"tensorrt: cannot parse {onnx_path.name}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    opt = builder.create_optimization_profile()
    name = network.get_input(0).name
    opt.set_shape(name, (1, *profile.chw), (profile.opt_batch, *profile.chw), (profile.max_batch, *profile.chw))
    config.add_optimization_profile(opt)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise UnsupportedFormatError(f"tensorrt: the builder failed for {onnx_path.name} (see TensorRT's log above)")
    return bytes(engine)


class EngineRunner:
    """Runs a serialized engine on CUDA: float32 CPU batch in, float32 CPU logits out."""

    def __init__(self, path: Path) -> None:
        trt = _trt()
        self._trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise CheckpointError(f"{path}: not a TensorRT engine for this TensorRT version and GPU")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = self.engine.get_tensor_mode
        self.input = next(n for n in names if mode(n) == trt.TensorIOMode.INPUT)
        self.output = next(n for n in names if mode(n) == trt.TensorIOMode.OUTPUT)
        self.stream = torch.cuda.Stream()

    def _dtype(self, name: str) -> torch.dtype:
        trt = self._trt
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8}
        return table[self.engine.get_tensor_dtype(name)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to("cuda", self._dtype(self.input)).contiguous()
        self.context.set_input_shape(self.input, tuple(x.shape))
        y = torch.empty(tuple(self.context.get_tensor_shape(self.output)), dtype=self._dtype(self.output), device="cuda")
        self.context.set_tensor_address(self.input, x.data_ptr())
        self.context.set_tensor_address(self.output, y.data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream())  # x was written on the default stream
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        return y.float().cpu()
