"""OpenVINO: convert, quantize (NNCF), save, load and inspect IR models (``.xml`` + ``.bin``).

An IR artifact is two files side by side; the ``.xml`` names it everywhere in the pipeline and
:func:`artifact_files` lists both, so sizes and hashes cover the weights too. OpenVINO and NNCF
are optional (the ``openvino`` extra): :func:`unavailable` says why a machine cannot use them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

WEIGHT_OPS = ("Convolution", "GroupConvolution", "MatMul")  # the layers pruning and MACs are about


def unavailable() -> str | None:
    """Why OpenVINO cannot run here (None when it can)."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install 'cnn-compress[openvino]')"
    return None


def artifact_files(path: Path) -> list[Path]:
    """Every file an artifact consists of: an IR's ``.bin`` beside its ``.xml``."""
    path = Path(path)
    weights = path.with_suffix(".bin")
    return [path, weights] if path.suffix == ".xml" and weights.is_file() else [path]


def convert(model: torch.nn.Module, example: torch.Tensor) -> Any:
    """An fp32 ``ov.Model`` with a dynamic batch axis, traced from the PyTorch module."""
    import openvino as ov

    model = model.float().eval()
    with torch.no_grad():
        return ov.convert_model(model, example_input=example[:1].float(), input=[(-1, *example.shape[1:])])


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs a line per step and draws rich progress bars: kept on a terminal, left out of logs
    (rich prints a finished bar even where output is not a terminal)."""
    import nncf
    import rich

    logger, console = logging.getLogger("nncf"), rich.get_console()  # NNCF's bars draw on rich's console
    level, quiet = logger.level, console.quiet
    nncf.set_log_level(logging.ERROR)
    console.quiet = quiet or not console.is_terminal
    try:
        yield
    finally:
        logger.setLevel(level)
        console.quiet = quiet


def quantize(ov_model: Any, calib: torch.Tensor, method: str = "minmax") -> Any:
    """NNCF post-training INT8 on ``calib`` (the class-balanced images every INT8 path uses).

    One image per calibration item and ``method`` applied to activations (``minmax``: the global
    range, as ONNX Runtime's MinMax; ``percentile``: the mean of per-image quantiles), with full bias
    correction: on a tiny ResNet NNCF's defaults (mean of per-item ranges, fast bias correction)
    agreed with PyTorch on 82-87% of test images, these settings on 97%.
    """
    import nncf
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    estimators = {"minmax": RangeEstimatorParametersSet.MINMAX, "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE}
    if method not in estimators:
        raise ValueError(f"NNCF has no '{method}' calibration (use {' or '.join(estimators)})")
    advanced = nncf.AdvancedQuantizationParameters(activations_range_estimator_params=estimators[method])
    items = [calib[i : i + 1].float().numpy() for i in range(len(calib))]
    with _quiet_nncf():
        return nncf.quantize(ov_model, nncf.Dataset(items), subset_size=len(items), fast_bias_correction=False,
                             advanced_parameters=advanced)


def save(ov_model: Any, path: Path, fp16: bool = False) -> None:
    """``path`` (.xml) and its .bin, full precision (``fp16``: float weights stored as FP16, widened
    when compiled), written so that a reader never sees half an IR: both land in a temporary
    folder first, the weights are moved in before the graph."""
    import openvino as ov

    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as tmp:
        xml = Path(tmp) / path.name
        ov.save_model(ov_model, str(xml), compress_to_fp16=fp16)
        os.replace(xml.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(xml, path)


def read(path: Path) -> Any:
    import openvino as ov

    from cnn_compress.core.errors import CheckpointError

    try:
        return ov.Core().read_model(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: OpenVINO cannot read it ({str(exc).strip().splitlines()[0][:120]})") from None


def compile_cpu(model: Path | Any, threads: int, profile: bool = False) -> Any:
    """An IR file (or an ``ov.Model``) compiled for the CPU with an explicit thread count, the
    latency hint and fp32 inference precision (OpenVINO would otherwise run fp32 models in bf16 on
    CPUs that have it); ``profile`` turns on per-layer counters."""
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
              "NUM_STREAMS": 1, "PERF_COUNT": profile}
    return ov.Core().compile_model(read(model) if isinstance(model, (str, Path)) else model, "CPU", config)


class StaticShapes:
    """An IR run the way OpenVINO recommends for a fixed deployment shape: the model reshaped to a
    static batch and compiled once per batch size it meets (a dynamic batch axis ran the dense
    ResNet-56 INT8 IR 1.30x slower at batch 1 in ``benchmark_app``). The first call at a new size
    compiles, so timing loops must warm each size up first (the benchmark harness does)."""

    def __init__(self, path: Path, threads: int) -> None:
        self.model, self.threads = read(path), threads
        self.requests: dict[tuple[int, ...], Any] = {}

    def request(self, shape: tuple[int, ...]) -> Any:
        if shape not in self.requests:
            model = self.model.clone()
            model.reshape(list(shape))  # its one input
            self.requests[shape] = compile_cpu(model, self.threads).create_infer_request()
        return self.requests[shape]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        request = self.request(tuple(x.shape))
        request.infer({0: x.contiguous().numpy()}, share_inputs=True)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())


def benchmark_app(path: Path, batch: int, threads: int, seconds: int = 3) -> dict[str, float]:
    """OpenVINO's own timer on the same IR, static shape, one stream, synchronous calls: the
    cross-check of our harness (median latency in ms and images per second, as it prints them)."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    shape = [batch, *[d.get_length() for d in read(path).input(0).get_partial_shape()[1:]]]
    cmd = [exe, "-m", str(path), "-d", "CPU", "-shape", str(shape).replace(" ", ""), "-hint", "none",
           "-nstreams", "1", "-nthreads", str(threads), "-api", "sync", "-t", str(max(1, round(seconds))), "-infer_precision", "f32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120 + 4 * seconds)
    try:
        return benchmark_app_figures(proc.stdout)
    except ValueError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"benchmark_app failed on {path} (rc {proc.returncode}: {tail[0][:160]})") from None


def benchmark_app_figures(log: str) -> dict[str, float]:
    """Median latency (ms) and throughput (images/s) from benchmark_app's report lines (its JSON
    report rounds latency to 0.01 ms, too coarse for a sub-millisecond model)."""
    import re

    median = re.search(r"Median:\s+([\d.]+)\s*(us|ms)", log)
    fps = re.search(r"Throughput:\s+([\d.]+)\s*FPS", log)
    if not median or not fps:
        raise ValueError("no Median / Throughput lines in benchmark_app's output")
    scale = 1e-3 if median.group(2) == "us" else 1.0
    return {"ms_median": float(median.group(1)) * scale, "ips": float(fps.group(1))}


def layer_profile(path: Path, x: torch.Tensor, threads: int, runs: int) -> list[dict[str, Any]]:
    """Where the time goes: per-layer real time (µs per inference, summed over ``runs``), by layer."""
    model = read(path)
    model.reshape(list(x.shape))  # static, as the timed runner compiles it
    request = compile_cpu(model, threads, profile=True).create_infer_request()
    totals: dict[tuple[str, str, str], float] = {}
    for _ in range(runs):
        request.infer({0: x.contiguous().numpy()})
        for info in request.get_profiling_info():
            key = (info.node_name, info.node_type, info.exec_type)
            totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds() * 1e6
    rows = [{"layer": k[0], "type": k[1], "kernel": k[2], "us": round(v / runs, 2)} for k, v in totals.items() if v > 0]
    return sorted(rows, key=lambda r: -r["us"])


def _constant(node: Any) -> np.ndarray | None:
    """The stored tensor behind a weight input, through Convert / Subtract / Multiply (decompression)
    and FakeQuantize: an INT8 IR is counted from its INT8 weights."""
    for _ in range(8):
        kind = node.get_type_name()
        if kind == "Constant":
            return node.get_data()
        if kind not in ("Convert", "Subtract", "Multiply", "FakeQuantize", "Reshape") or node.get_input_size() == 0:
            return None
        node = node.input_value(0).get_node()
    return None


def _bias(op: Any) -> np.ndarray | None:
    """The constant of an ``Add`` that is the layer's only consumer (OpenVINO's form of a bias)."""
    targets = list(op.output(0).get_target_inputs())
    if len(targets) != 1 or targets[0].get_node().get_type_name() != "Add":
        return None
    add = targets[0].get_node()
    return next((c for i in range(2) if (c := _constant(add.input_value(i).get_node())) is not None), None)


def layers(path: Path) -> list[tuple[np.ndarray, np.ndarray | None, int]]:
    """(weight, bias, MACs at batch 1) of every conv and linear layer of an IR."""
    found = []
    for op in read(path).get_ordered_ops():
        if op.get_type_name() not in WEIGHT_OPS:
            continue
        weight = _constant(op.input_value(1).get_node())
        if weight is None or weight.ndim not in (2, 4, 5):
            continue
        if op.get_type_name() == "MatMul":  # one input row at batch 1: each weight is used once
            found.append((weight, _bias(op), int(weight.size)))
            continue
        out = [d.get_length() if d.is_static else 0 for d in op.get_output_partial_shape(0)]
        positions = int(np.prod(out[2:])) if len(out) > 2 and all(out[2:]) else 1
        found.append((weight, _bias(op), positions * int(weight.size)))  # groups: weight holds every group
    return found


def tensors(path: Path) -> dict[str, np.ndarray]:
    """Every stored constant of an IR with more than one element, by its node name."""
    out = {}
    for op in read(path).get_ordered_ops():
        if op.get_type_name() == "Constant" and op.get_output_partial_shape(0).is_static:
            data = op.get_data()
            if data.size > 1:
                out[op.get_friendly_name()] = np.ascontiguousarray(data)
    return out
