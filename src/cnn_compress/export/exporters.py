"""Export formats, one handler per name in ``export.formats``.

- ``onnx``: fp32 ONNX with a dynamic batch axis, weights inside the file, checked by the ONNX
  checker.
- ``ort_int8``: ONNX Runtime static quantization (QDQ, per-channel INT8 weights), calibrated on a
  class-balanced subset of the training split with MinMax / Entropy / Percentile.
- ``tensorrt_fp32`` / ``tensorrt_fp16`` / ``tensorrt_int8``: serialized TensorRT engines
  (``trt_engine.py``) built from an fp32 ONNX model, an FP16 ONNX model, and a Q/DQ ONNX model with
  symmetric zero-point-0 INT8 activations and weights (what explicit quantization requires).
  Optional: they need the ``tensorrt`` extra and a CUDA GPU, checked before any work starts.
- ``openvino_fp32`` / ``openvino_fp16`` / ``openvino_int8``: OpenVINO IR (``.xml`` + ``.bin``) converted from the
  PyTorch model, the INT8 one quantized by NNCF post-training quantization on the same calibration
  images as ``ort_int8``. Optional: the ``openvino`` extra.
Every artifact is then checked against its PyTorch source on the test split.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnn_compress.core import atomic
from cnn_compress.core.errors import UnsupportedFormatError
from cnn_compress.core.registry import Registry
from cnn_compress.export.config import ExportConfig
from cnn_compress.models.checkpoint import Checkpoint


@dataclass
class ExportContext:
    """What every exporter works from. The fp32 ONNX model is exported once per run and shared
    (the ONNX Runtime and TensorRT paths start from it): a dynamo export costs seconds."""

    ckpt: Checkpoint
    calib: torch.Tensor  # normalised, class-balanced calibration images
    cfg: ExportConfig
    workdir: Path
    _fp32: Path | None = field(default=None, repr=False)

    def fp32_onnx(self) -> Path:
        if self._fp32 is None:
            self._fp32 = self.workdir / "fp32.onnx"
            write_onnx(self.ckpt.model, self.calib[:2], self._fp32, self.cfg.opset)
        return self._fp32


Exporter = Callable[[ExportContext, Path], None]
EXPORTERS: Registry[Exporter] = Registry("export.formats", "format")  # meta: suffix


def register_exporter(name: str, suffix: str,
                      requires: Callable[[], str | None] = lambda: None) -> Callable[[Exporter], Exporter]:
    return EXPORTERS.register(name, suffix=suffix, requires=requires)


def exporter_names() -> list[str]:
    return EXPORTERS.names()


def check_formats(formats: tuple[str, ...], key: str = "export.formats") -> None:
    """Unknown formats and formats this machine cannot build fail before any work starts."""
    for name in formats:
        EXPORTERS.check(name, key)
        if reason := EXPORTERS.meta(name)["requires"]():
            raise UnsupportedFormatError(f"{key}: {name} cannot run on this machine: {reason}")


def export_all(ckpt: Checkpoint, calib: torch.Tensor, out_dir: Path, cfg: ExportConfig) -> dict[str, str]:
    """Write every format of ``cfg.formats`` into ``out_dir``; return name -> file name."""
    check_formats(cfg.formats)
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = ExportContext(ckpt, calib, cfg, Path(tmp))
        for name in cfg.formats:
            suffix, handler = EXPORTERS.meta(name)["suffix"], EXPORTERS.get(name)
            path = out_dir / f"{name}{suffix}"
            handler(ctx, path)
            files[name] = path.name
    return files


def write_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int,
               dtype: torch.dtype | None = torch.float32) -> None:
    """ONNX (fp32 unless ``dtype`` is None: then the model's own dtype), dynamic batch, one file,
    validated by the ONNX checker; written atomically."""
    import onnx

    model = (model.to(dtype) if dtype else model).eval()

    def export(tmp: Path) -> None:
        torch.onnx.export(
            model, (example,), str(tmp), dynamo=True, opset_version=opset, input_names=["input"],
            output_names=["logits"], dynamic_shapes=({0: "batch"},), external_data=False, verbose=False,
        )

    with atomic.atomic_path(path) as tmp, _quiet():
        blamed(model, "ONNX", lambda: export(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)


def blamed(model: torch.nn.Module, runtime: str, convert: Callable[[], Any]) -> Any:
    """``convert()``; when it fails, one line naming the layer it failed in (your own model's
    unexportable op), found by converting again with hooks that track the module being traced."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # a failing exporter prints its whole graph
            return convert()
    except Exception as first:
        error = first
    stack: list[str] = []
    handles = []

    def leave(_m: Any, _i: Any, _o: Any) -> None:
        if stack:
            stack.pop()

    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda _m, _i, name=name: stack.append(name)))
        handles.append(module.register_forward_hook(leave))
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            convert()
    except Exception as again:
        error = again
    finally:
        for h in handles:
            h.remove()
    while error.__cause__ is not None:  # the exporter's own wrapper says less than what it wraps
        error = error.__cause__
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines() or [""]
    where = next((n for n in reversed(stack) if n), "")
    layer = f" at layer {where} ({type(model.get_submodule(where)).__name__})" if where else ""
    raise UnsupportedFormatError(f"{runtime} export failed{layer}: {type(error).__name__}: {lines[0][:300]}") from None


@contextlib.contextmanager
def _quiet() -> Any:
    """The dynamo exporter prints progress lines; keep stage logs to what matters."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@register_exporter("onnx", ".onnx")
def _onnx(ctx: ExportContext, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        shutil.copyfile(ctx.fp32_onnx(), tmp)


class _CalibReader:
    """ONNX Runtime's CalibrationDataReader protocol over an in-memory tensor."""

    def __init__(self, name: str, calib: torch.Tensor, batch: int = 32) -> None:
        self._batches = iter([{name: calib[i : i + batch].numpy()} for i in range(0, len(calib), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def write_qdq_onnx(model: torch.nn.Module, calib: torch.Tensor, path: Path, opset: int, method: str,
                   symmetric: bool, fp32_onnx: Path | None = None) -> None:
    """Static INT8 Q/DQ ONNX, per-channel weights, calibrated on ``calib`` (from ``fp32_onnx`` when
    the model is already exported).

    ``symmetric`` makes activations signed INT8 with zero-point 0 (TensorRT's requirement);
    otherwise activations are UINT8 with a zero-point, which suits ReLU networks on ONNX Runtime.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # quantize_static logs a line per tensor
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        stack.callback(root.setLevel, level)
        fp32, pre = fp32_onnx or Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        if fp32_onnx is None:
            write_onnx(model, calib[:2], fp32, opset)
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        with atomic.atomic_path(path) as out:
            try:
                quantize_static(
                    str(pre), str(out), _CalibReader("input", calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=calibrate,
                    # 7-bit weights: x86 CPUs without VNNI (AVX2, AVX-512F) run ONNX Runtime's U8S8
                    # QLinearConv / MatMul with vpmaddubsw, whose int16 pair sums saturate with 8-bit
                    # weights (255 * 127 * 2 > 32767); measured here: 30% top-1 agreement without it
                    reduce_range=True,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                                   "CalibTensorRangeSymmetric": symmetric},
                )
            except Exception as exc:
                raise UnsupportedFormatError(f"{path.stem}: ONNX Runtime quantization failed ({exc})") from None


@register_exporter("ort_int8", ".onnx")
def _ort_int8(ctx: ExportContext, path: Path) -> None:
    write_qdq_onnx(ctx.ckpt.model, ctx.calib, path, ctx.cfg.opset, ctx.cfg.calib_method, symmetric=False,
                   fp32_onnx=ctx.fp32_onnx())


def _tensorrt(precision: str) -> Exporter:
    def build(ctx: ExportContext, path: Path) -> None:
        from cnn_compress.runtimes import trt_engine

        ckpt, calib, cfg = ctx.ckpt, ctx.calib, ctx.cfg
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / f"{precision}.onnx"
            if precision == "int8":
                write_qdq_onnx(ckpt.model, calib, onnx_path, cfg.opset, cfg.calib_method, symmetric=True,
                               fp32_onnx=ctx.fp32_onnx())
            elif precision == "fp16":
                write_onnx(copy.deepcopy(ckpt.model).half(), calib[:2].half(), onnx_path, cfg.opset, dtype=None)
            else:
                onnx_path = ctx.fp32_onnx()
            profile = trt_engine.Profile(tuple(calib.shape[1:]), cfg.trt_opt_batch, cfg.trt_max_batch)
            atomic.write_bytes(path, trt_engine.build_engine(onnx_path, profile, cfg.trt_workspace_mb))

    return build


def _trt_unavailable() -> str | None:
    from cnn_compress.runtimes import trt_engine

    return trt_engine.unavailable()


for _precision in ("fp32", "fp16", "int8"):
    register_exporter(f"tensorrt_{_precision}", ".engine", requires=_trt_unavailable)(_tensorrt(_precision))


def _ov_unavailable() -> str | None:
    from cnn_compress.runtimes import ov_runtime

    return ov_runtime.unavailable()


def _openvino(int8: bool, fp16: bool = False) -> Exporter:
    def build(ctx: ExportContext, path: Path) -> None:
        from cnn_compress.runtimes import ov_runtime

        source = copy.deepcopy(ctx.ckpt.model)
        model = blamed(source, "OpenVINO", lambda: ov_runtime.convert(source, ctx.calib[:1]))
        if int8:
            try:
                model = ov_runtime.quantize(model, ctx.calib, ctx.cfg.calib_method)
            except Exception as exc:
                raise UnsupportedFormatError(f"{path.stem}: NNCF quantization failed ({exc})") from None
        ov_runtime.save(model, path, fp16=fp16)

    return build


register_exporter("openvino_fp32", ".xml", requires=_ov_unavailable)(_openvino(int8=False))
register_exporter("openvino_int8", ".xml", requires=_ov_unavailable)(_openvino(int8=True))
register_exporter("openvino_fp16", ".xml", requires=_ov_unavailable)(_openvino(int8=False, fp16=True))


def verify(source: torch.nn.Module, files: dict[str, str], out_dir: Path, ds: Any, threads: int = 1) -> dict[str, Any]:
    """Top-1 agreement and max |logit difference| of each artifact against its PyTorch source."""
    from cnn_compress.data.evaluation import agreement, predict_logits
    from cnn_compress.runtimes.ov_runtime import artifact_files
    from cnn_compress.runtimes.runners import load_runner

    images, _ = ds.split("test")
    ref = predict_logits(lambda x: source.float()(x), images, ds.mean, ds.std, 256)
    report = {}
    for name, file in files.items():
        runner = load_runner(out_dir / file, threads)
        logits = predict_logits(runner.predict, images, ds.mean, ds.std, 256)
        size = sum(f.stat().st_size for f in artifact_files(out_dir / file))
        report[name] = agreement(ref, logits) | {"size_bytes": size}
    return report
