"""Quantization formats, one handler per name in ``quantize.formats``.

- ``fp32``: the reference, the fine-tuned checkpoint as is.
- ``fp16``: half-precision weights and activations (a ``.pt`` checkpoint).
- ``int8_dynamic``: torchao int8 dynamic activation + int8 weight; it only touches linear
  layers, so a CNN barely changes (the studies' finding).
- ``int8_static``: post-training static INT8 through torchao PT2E with the X86 inductor quantizer,
  calibrated on a class-balanced subset of the training split.
The INT8 artifacts are ``torch.export`` programs (``.pt2``) with a dynamic batch dimension.
"""
from __future__ import annotations

import copy
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnn_compress import atomic
from cnn_compress.checkpoint import Checkpoint, save_checkpoint
from cnn_compress.errors import UnsupportedFormatError
from cnn_compress.registry import Registry

logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao import-time chatter


@dataclass(frozen=True)
class QuantFormat:
    name: str
    suffix: str
    backend: str  # recorded with the artifact: which library produced it
    build: Callable[[Checkpoint, torch.Tensor, Path], None]


FORMATS: Registry[Callable[..., None]] = Registry("quantize.formats", "format")  # meta: suffix, backend


def register_format(name: str, suffix: str, backend: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return FORMATS.register(name, suffix=suffix, backend=backend)


def format_names() -> list[str]:
    return FORMATS.names()


def check_formats(formats: tuple[str, ...]) -> list[QuantFormat]:
    """Resolve format names up front so a bad one fails before any work is done."""
    return [QuantFormat(f, FORMATS.meta(f)["suffix"], FORMATS.meta(f)["backend"], FORMATS.get(f)) for f in formats]


def quantize_all(ckpt: Checkpoint, formats: tuple[str, ...], calib: torch.Tensor, out_dir: Path) -> dict[str, Any]:
    """Write one artifact per format into ``out_dir`` plus ``manifest.json``; return the manifest."""
    manifest: dict[str, Any] = {}
    for fmt in check_formats(formats):
        path = out_dir / f"{fmt.name}{fmt.suffix}"
        fmt.build(ckpt, calib, path)
        manifest[fmt.name] = {"file": path.name, "backend": fmt.backend, "calib_images": len(calib)}
    atomic.write_json(out_dir / "manifest.json", manifest)
    return manifest


def _batch_dim() -> dict[int, Any]:
    return {0: torch.export.Dim("batch", min=1, max=65536)}


def save_exported(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Save a ``torch.export`` program with a dynamic batch (the example is cloned: a slice
    would drag its whole base tensor into the archive)."""
    program = torch.export.export(model, (example.clone(),), dynamic_shapes=(_batch_dim(),))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic.write_bytes(path, buf.getvalue())


@register_format("fp32", ".pt", f"torch-{torch.__version__}")
def _fp32(ckpt: Checkpoint, calib: torch.Tensor, path: Path) -> None:
    save_checkpoint(path, ckpt.derive(copy.deepcopy(ckpt.model).float(), "quantize", {"format": "fp32"}))


@register_format("fp16", ".pt", f"torch-{torch.__version__}")
def _fp16(ckpt: Checkpoint, calib: torch.Tensor, path: Path) -> None:
    model = copy.deepcopy(ckpt.model).half()
    save_checkpoint(path, ckpt.derive(model, "quantize", {"format": "fp16"}, dtype="float16"))


@register_format("int8_dynamic", ".pt2", "torchao-int8-dynamic")
def _int8_dynamic(ckpt: Checkpoint, calib: torch.Tensor, path: Path) -> None:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = copy.deepcopy(ckpt.model).float().eval()
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    save_exported(model, calib[:2], path)


def _x86_quantizer() -> Any:
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    return quantizer


@register_format("int8_static", ".pt2", "torchao-pt2e-x86-inductor")
def _int8_static(ckpt: Checkpoint, calib: torch.Tensor, path: Path) -> None:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = copy.deepcopy(ckpt.model).float().eval()
    try:
        graph = torch.export.export(model, (calib[:2],), dynamic_shapes=(_batch_dim(),)).module()
        prepared = prepare_pt2e(graph, _x86_quantizer())
        with torch.no_grad():
            for start in range(0, len(calib), 64):
                prepared(calib[start : start + 64])
        converted = convert_pt2e(prepared)
    except (RuntimeError, NotImplementedError) as exc:
        raise UnsupportedFormatError(f"int8_static: PT2E quantization failed here ({str(exc).splitlines()[0]})") from None
    save_exported(converted, calib[:2], path)
