"""Export formats, one handler per name in ``export.formats``.

- ``onnx``: fp32 ONNX with a dynamic batch axis, weights inside the file, checked by the ONNX
  checker.
- ``ort_int8``: ONNX Runtime static quantization (QDQ, per-channel INT8 weights), calibrated on a
  class-balanced subset of the training split with MinMax / Entropy / Percentile.
Every artifact is then checked against its PyTorch source on the test split.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnn_compress import atomic
from cnn_compress.checkpoint import Checkpoint
from cnn_compress.config import ExportConfig
from cnn_compress.errors import UnsupportedFormatError
from cnn_compress.registry import Registry

Exporter = Callable[[Checkpoint, torch.Tensor, Path, ExportConfig], None]
EXPORTERS: Registry[Exporter] = Registry("export.formats", "format")  # meta: suffix


def register_exporter(name: str, suffix: str) -> Callable[[Exporter], Exporter]:
    return EXPORTERS.register(name, suffix=suffix)


def exporter_names() -> list[str]:
    return EXPORTERS.names()


def check_formats(formats: tuple[str, ...]) -> None:
    for name in formats:
        EXPORTERS.check(name)


def export_all(ckpt: Checkpoint, calib: torch.Tensor, out_dir: Path, cfg: ExportConfig) -> dict[str, str]:
    """Write every format of ``cfg.formats`` into ``out_dir``; return name -> file name."""
    check_formats(cfg.formats)
    files = {}
    for name in cfg.formats:
        suffix, handler = EXPORTERS.meta(name)["suffix"], EXPORTERS.get(name)
        path = out_dir / f"{name}{suffix}"
        handler(ckpt, calib, path, cfg)
        files[name] = path.name
    return files


def write_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """fp32 ONNX, dynamic batch, one file, validated by the ONNX checker; written atomically."""
    import onnx

    model = model.float().eval()
    with atomic.atomic_path(path) as tmp, _quiet():
        torch.onnx.export(
            model, (example,), str(tmp), dynamo=True, opset_version=opset, input_names=["input"],
            output_names=["logits"], dynamic_shapes=({0: "batch"},), external_data=False, verbose=False,
        )
        onnx.checker.check_model(str(tmp), full_check=True)


@contextlib.contextmanager
def _quiet() -> Any:
    """The dynamo exporter prints progress lines; keep stage logs to what matters."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@register_exporter("onnx", ".onnx")
def _onnx(ckpt: Checkpoint, calib: torch.Tensor, path: Path, cfg: ExportConfig) -> None:
    write_onnx(ckpt.model, calib[:2], path, cfg.opset)


class _CalibReader:
    """ONNX Runtime's CalibrationDataReader protocol over an in-memory tensor."""

    def __init__(self, name: str, calib: torch.Tensor, batch: int = 32) -> None:
        self._batches = iter([{name: calib[i : i + batch].numpy()} for i in range(0, len(calib), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


@register_exporter("ort_int8", ".onnx")
def _ort_int8(ckpt: Checkpoint, calib: torch.Tensor, path: Path, cfg: ExportConfig) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.calib_method]
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # quantize_static logs a line per tensor
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        stack.callback(root.setLevel, level)
        fp32, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        write_onnx(ckpt.model, calib[:2], fp32, cfg.opset)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        with atomic.atomic_path(path) as out:
            try:
                quantize_static(
                    str(pre), str(out), _CalibReader("input", calib), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=method, extra_options={"CalibTensorRangeSymmetric": False},
                )
            except Exception as exc:
                raise UnsupportedFormatError(f"ort_int8: ONNX Runtime quantization failed ({exc})") from None


def verify(source: torch.nn.Module, files: dict[str, str], out_dir: Path, ds: Any, threads: int = 1) -> dict[str, Any]:
    """Top-1 agreement and max |logit difference| of each artifact against its PyTorch source."""
    from cnn_compress.evaluation import agreement, predict_logits
    from cnn_compress.runtimes import load_runner

    images, _ = ds.split("test")
    ref = predict_logits(lambda x: source.float()(x), images, ds.mean, ds.std, 256)
    report = {}
    for name, file in files.items():
        runner = load_runner(out_dir / file, threads)
        logits = predict_logits(runner.predict, images, ds.mean, ds.std, 256)
        report[name] = agreement(ref, logits) | {"size_bytes": (out_dir / file).stat().st_size}
    return report
