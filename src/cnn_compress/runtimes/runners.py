"""Load any artifact of the pipeline as a predict function, keyed by its file suffix.

``.pt`` is a cnn-compress checkpoint (PyTorch eager, fp32 or fp16), ``.pt2`` a ``torch.export``
program (the torchao INT8 paths), ``.onnx`` an ONNX Runtime session, ``.xml`` an OpenVINO IR
compiled for the CPU. Every runner takes a
normalised float32 batch and returns float32 logits, so accuracy and timing code is shared.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from cnn_compress.core.errors import CheckpointError
from cnn_compress.core.registry import Registry
from cnn_compress.data.evaluation import Predict
from cnn_compress.models.checkpoint import load_checkpoint
from cnn_compress.quantize import fakequant  # noqa: F401  registers the loader of fixed<N> grids


@dataclass
class Runner:
    predict: Predict
    runtime: str  # which engine ran it, recorded with every benchmark row
    module: torch.nn.Module | None = None  # the PyTorch module behind predict, when there is one
    dtype: torch.dtype = torch.float32  # what the module takes
    device: str = "cpu"  # "cuda": the benchmark times it with CUDA events as well


RunnerLoader = Callable[[Path, int], Runner]
RUNTIMES: Registry[RunnerLoader] = Registry("artifact suffix", "runtime", CheckpointError)


def register_runtime(suffix: str) -> Callable[[RunnerLoader], RunnerLoader]:
    return RUNTIMES.register(suffix)


def load_runner(path: str | Path, threads: int = 1, compile_sizes: tuple[int, ...] = ()) -> Runner:
    """A predict function for any artifact; ``compile_sizes`` wraps PyTorch ones in ``torch.compile``."""
    path = Path(path)
    if path.suffix not in RUNTIMES:
        raise CheckpointError(f"{path}: no runtime for '{path.suffix}' files (known: {', '.join(RUNTIMES.names())})")
    if not path.is_file():
        raise CheckpointError(f"{path}: artifact not found")
    runner = RUNTIMES.get(path.suffix)(path, threads)
    return compiled(runner, compile_sizes) if compile_sizes else runner


def compiled(runner: Runner, sizes: tuple[int, ...]) -> Runner:
    """``torch.compile`` (inductor) with freezing: weights become constants, so conv + BN fold and
    the PT2E INT8 graphs lower to oneDNN INT8 kernels. Shapes are static: a batch is zero-padded
    up to the next of ``sizes`` (one compilation each, on first use), since dynamic-shape kernels
    are slower and every new batch size would otherwise recompile."""
    if runner.module is None:
        raise CheckpointError(f"torch.compile applies to PyTorch artifacts, not {runner.runtime}")
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    module, dtype, sizes = torch.compile(runner.module, dynamic=False), runner.dtype, tuple(sorted(sizes))

    def predict(x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        size = next((s for s in sizes if s >= n), None)
        if size is None:
            return torch.cat([predict(x[i : i + sizes[-1]]) for i in range(0, n, sizes[-1])])
        if size > n:
            x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
        return module(x.to(dtype)).float()[:n]

    return Runner(predict, f"{runner.runtime}+inductor-freezing", module, dtype)


@register_runtime(".pt")
def _torch_checkpoint(path: Path, threads: int) -> Runner:
    torch.set_num_threads(threads)
    ckpt = load_checkpoint(path)
    model, dtype = ckpt.model, next(ckpt.model.parameters()).dtype

    def predict(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(dtype)).float()

    return Runner(predict, f"torch-eager-{ckpt.dtype}", model, dtype)


def check_archive(path: Path) -> None:
    """Read every member of a ``.pt2`` (a zip archive) against its CRC-32 before loading it.

    torch stores the members uncompressed and never checks their CRCs: a weight overwritten on
    disk or in a remote loads and runs with wrong values, and a truncated file ends in a
    BadZipFile traceback. Both are one CheckpointError here. A file cut short no longer ends
    with its end-of-archive record (torch writes no comment after it); zipfile alone would
    find the record of the zip nested inside (the sample inputs) and read that one instead.
    """
    with open(path, "rb") as f:
        f.seek(max(path.stat().st_size - 22, 0))
        if f.read(4) != b"PK\x05\x06":
            raise CheckpointError(f"{path}: corrupt torch.export program (cut short: it does not end with "
                                  "the zip end-of-archive record)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # BadZipFile, EOFError, zlib.error, OSError...: all say the file is damaged
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise CheckpointError(f"{path}: corrupt torch.export program (not a readable zip archive: {detail})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: corrupt torch.export program (member {bad} fails its CRC-32 check)")


@contextlib.contextmanager
def _quiet_export_log() -> Iterator[None]:
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_program(path: str | Path) -> torch.export.ExportedProgram:
    """A ``torch.export`` program, its archive checked first; loaded once per version of the file.

    The benchmark stage reads each INT8 program three times (to run it, to count its layers and to
    measure its compressed size), and one load takes 1.4 s for a ResNet-8. The archive's CRCs are
    checked on every call, so a file damaged in place is never served from the cache."""
    path = Path(path)
    check_archive(path)
    stat = path.stat()
    return _load_program(str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _load_program(path: str, inode: int, mtime_ns: int, size: int) -> torch.export.ExportedProgram:
    # the Q/DQ ops INT8 programs name (torch's registration: torchao's import costs 4 s; pickled
    # torchao tensor subclasses import torchao themselves)
    from torch.ao.quantization.fx import _decomposed  # noqa: F401

    try:
        with _quiet_export_log():  # torch logs the whole traceback of a failed load as a warning
            return torch.export.load(path)
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt torch.export program ({type(exc).__name__})") from None


@register_runtime(".pt2")
def _torch_export(path: Path, threads: int) -> Runner:
    torch.set_num_threads(threads)
    module = load_program(path).module()

    def predict(x: torch.Tensor) -> torch.Tensor:
        return module(x).float()

    return Runner(predict, "torch-export", module)


@register_runtime(".onnx")
def _onnxruntime(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # its documented best for CPU inference
    # idle pool threads sleep instead of spinning: several runtimes timed in turn in one process
    # would otherwise compete with ONNX Runtime's spinning threads for the same cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CheckpointError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:120]})") from None
    name = session.get_inputs()[0].name

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.contiguous().numpy()})[0])

    return Runner(predict, f"onnxruntime-{ort.__version__}-cpu")


@register_runtime(".xml")
def _openvino(path: Path, threads: int) -> Runner:
    """An OpenVINO IR on the CPU, as OpenVINO recommends for a fixed deployment shape: reshaped to a
    static batch and compiled once per batch size it meets (one infer request each, inputs shared
    without a copy). The first call at a new size compiles: timing warms each size up first."""
    import openvino as ov

    from cnn_compress.runtimes import ov_runtime

    return Runner(ov_runtime.StaticShapes(path, threads), f"openvino-{ov.get_version().split('-')[0]}-cpu")


@register_runtime(".engine")
def _tensorrt(path: Path, threads: int) -> Runner:
    """A TensorRT engine on the GPU (input copied to the device and logits back, both timed)."""
    from cnn_compress.runtimes import trt_engine

    engine = trt_engine.EngineRunner(path)
    return Runner(engine, "tensorrt-cuda", device="cuda")
