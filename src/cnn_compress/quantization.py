"""Quantization formats, one handler per name in ``quantize.formats``.

- ``fp32``: the reference, the fine-tuned checkpoint as is.
- ``fp16``: half-precision weights and activations (a ``.pt`` checkpoint).
- ``int8_dynamic``: torchao int8 dynamic activation + int8 weight; it only touches linear
  layers, so a CNN barely changes (the studies' finding).
- ``int8_static``: post-training static INT8 through torchao PT2E with the X86 inductor quantizer,
  calibrated on a class-balanced subset of the training split.
- ``int8_mixed``: ``int8_static`` with the modules in ``quantize.mixed_float`` (default: the
  classifier) left in FP32.
- ``int8_qat``: quantization-aware training (PT2E fake-quant, ``quantize.qat_epochs``), then
  conversion to the same INT8 program as ``int8_static``.
- ``fixed2`` .. ``fixed8``: N-bit fixed point simulated in float (``fakequant.py``), symmetric or
  asymmetric, per channel or per tensor, optionally fine-tuned through the straight-through
  estimator.
The INT8 artifacts are ``torch.export`` programs (``.pt2``) with a dynamic batch dimension.
Each artifact is run once right after it is built, so a format this machine cannot execute
fails here, naming the format, instead of later in the DAG.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnn_compress import atomic
from cnn_compress.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cnn_compress.config import FinetuneConfig, PruneConfig, QuantizeConfig, to_dict
from cnn_compress.data import Dataset
from cnn_compress.errors import UnsupportedFormatError
from cnn_compress.fakequant import FixedPointModel, select_layers
from cnn_compress.models import head_name
from cnn_compress.pruning import global_sparsity, prune_int8_program, prune_model, sparsity_masks
from cnn_compress.registry import Registry
from cnn_compress.training import train_model

logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao import-time chatter


@dataclass(frozen=True)
class QuantContext:
    """What a format may need beyond the checkpoint: its settings, calibration images, data."""

    cfg: QuantizeConfig
    calib: torch.Tensor  # normalised class-balanced training images
    ds: Dataset | None = None  # int8_qat and fine-tuned fixed<N> train on its training split
    finetune: FinetuneConfig = FinetuneConfig()  # batch size, momentum, ... for QAT / STE epochs
    prune: PruneConfig | None = None  # prune.order after_quantize: prune each artifact's quantized weights


@dataclass(frozen=True)
class QuantFormat:
    name: str
    suffix: str
    backend: str  # recorded with the artifact: which library produced it
    build: Callable[[Checkpoint, QuantContext, Path], dict[str, Any]]


Builder = Callable[[Checkpoint, QuantContext, Path], "dict[str, Any] | None"]
FORMATS: Registry[Builder] = Registry("quantize.formats", "format")  # meta: suffix, backend, requires


def _x86_int8() -> str | None:
    """Why the x86 INT8 path cannot run here (None when it can)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return f"needs an x86 CPU for the X86 inductor INT8 kernels (this is {platform.machine()})"
    if not {"x86", "onednn", "fbgemm"} & set(torch.backends.quantized.supported_engines):
        return "this torch build has no x86 INT8 engine (torch.backends.quantized.supported_engines)"
    return None


def register_format(name: str, suffix: str, backend: str,
                    requires: Callable[[], str | None] = lambda: None) -> Callable[[Builder], Builder]:
    return FORMATS.register(name, suffix=suffix, backend=backend, requires=requires)


def format_names() -> list[str]:
    return FORMATS.names()


def check_formats(formats: tuple[str, ...], key: str = "quantize.formats") -> list[QuantFormat]:
    """Resolve format names up front, so a bad or unrunnable one fails before any work is done."""
    resolved = []
    for f in formats:
        FORMATS.check(f, key)
        build, meta = FORMATS.get(f), FORMATS.meta(f)
        if reason := meta["requires"]():
            raise UnsupportedFormatError(f"{key}: {f} cannot run on this machine: {reason}")
        resolved.append(QuantFormat(f, meta["suffix"], meta["backend"], build))
    return resolved


def quantize_all(ckpt: Checkpoint, formats: tuple[str, ...], calib: torch.Tensor, out_dir: Path,
                 ctx: QuantContext | None = None) -> dict[str, Any]:
    """Write one artifact per format into ``out_dir`` plus ``manifest.json``; return the manifest."""
    from cnn_compress.runtimes import load_runner

    ctx = ctx or QuantContext(QuantizeConfig(formats=formats), calib)
    manifest: dict[str, Any] = {}
    for fmt in check_formats(formats):
        path = out_dir / f"{fmt.name}{fmt.suffix}"
        extra = fmt.build(ckpt, ctx, path) or {}
        if ctx.prune is not None and ctx.prune.order == "after_quantize" and ctx.prune.ratio > 0:
            extra |= prune_artifact(path, fmt.name, ctx.prune)
        try:  # a smoke run now, not a crash in the benchmark stage later
            load_runner(path).predict(calib[:2])
        except Exception as exc:
            raise UnsupportedFormatError(f"quantize.formats: {fmt.name} was built but cannot run here "
                                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
        manifest[fmt.name] = {"file": path.name, "backend": fmt.backend, "calib_images": len(calib)} | extra
    atomic.write_json(out_dir / "manifest.json", manifest)
    return manifest


PRUNABLE_AFTER = ("fp32", "fp16", "int8_static", "int8_qat", *(f"fixed{b}" for b in range(2, 9)))


def check_prune_after(formats: tuple[str, ...], prune: PruneConfig) -> None:
    """``prune.order: after_quantize`` needs weights we can reach: plain tensors or PT2E int8 codes."""
    if prune.order == "after_quantize" and (bad := [f for f in formats if f not in PRUNABLE_AFTER]):
        raise UnsupportedFormatError(f"prune.order: after_quantize cannot prune the weights of {', '.join(bad)} "
                                     f"(supported: {', '.join(PRUNABLE_AFTER)})")


def prune_artifact(path: Path, fmt: str, cfg: PruneConfig) -> dict[str, Any]:
    """Prune a quantized artifact's own weights (fp16 values, N-bit grid values or INT8 codes)."""
    check_prune_after((fmt,), cfg)
    if path.suffix == ".pt":
        ckpt = load_checkpoint(path)
        model = prune_model(ckpt.model, cfg)
        save_checkpoint(path, ckpt.derive(model, "prune", to_dict(cfg), fake_quant=ckpt.fake_quant))
        return {"pruned_after_quantize": global_sparsity(model)}
    import torchao.quantization.pt2e  # noqa: F401  registers the ops the program refers to

    program = torch.export.load(path)
    zeroed = prune_int8_program(program, cfg)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic.write_bytes(path, buf.getvalue())
    return {"pruned_after_quantize_weights": zeroed}


def _batch_dim() -> dict[int, Any]:
    return {0: torch.export.Dim("batch", min=1, max=65536)}


def drop_unused_tensors(graph: torch.fx.GraphModule) -> int:
    """Delete parameters and buffers no node reads; returns the bytes freed.

    After ``convert_pt2e`` the float weights stay attached to the module although the graph only
    reads their INT8 copies, and ``torch.export`` would save both (an INT8 ResNet-20 file larger
    than the FP32 one).
    """
    used = {n.target for n in graph.graph.nodes if n.op == "get_attr"}
    freed = 0
    for name, tensor in [*graph.named_parameters(), *graph.named_buffers()]:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(graph.get_submodule(owner) if owner else graph, attr)
            freed += tensor.numel() * tensor.element_size()
    return freed


def save_exported(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Save a ``torch.export`` program with a dynamic batch (the example is cloned: a slice
    would drag its whole base tensor into the archive)."""
    if isinstance(model, torch.fx.GraphModule):
        drop_unused_tensors(model)
    program = torch.export.export(model, (example.clone(),), dynamic_shapes=(_batch_dim(),))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic.write_bytes(path, buf.getvalue())


@register_format("fp32", ".pt", f"torch-{torch.__version__}")
def _fp32(ckpt: Checkpoint, ctx: QuantContext, path: Path) -> None:
    save_checkpoint(path, ckpt.derive(copy.deepcopy(ckpt.model).float(), "quantize", {"format": "fp32"}))


@register_format("fp16", ".pt", f"torch-{torch.__version__}")
def _fp16(ckpt: Checkpoint, ctx: QuantContext, path: Path) -> None:
    model = copy.deepcopy(ckpt.model).half()
    save_checkpoint(path, ckpt.derive(model, "quantize", {"format": "fp16"}, dtype="float16"))


@register_format("int8_dynamic", ".pt2", "torchao-int8-dynamic")
def _int8_dynamic(ckpt: Checkpoint, ctx: QuantContext, path: Path) -> None:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = copy.deepcopy(ckpt.model).float().eval()
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    save_exported(model, ctx.calib[:2], path)


def _x86_quantizer(is_qat: bool = False, keep_float: tuple[str, ...] = ()) -> Any:
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=is_qat))
    for name in keep_float:  # mixed precision: these modules get no observers, so stay FP32
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def _pt2e_static(ckpt: Checkpoint, ctx: QuantContext, path: Path, fmt: str, keep_float: tuple[str, ...] = ()) -> None:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = copy.deepcopy(ckpt.model).float().eval()
    calib = ctx.calib
    try:
        graph = torch.export.export(model, (calib[:2],), dynamic_shapes=(_batch_dim(),)).module()
        prepared = prepare_pt2e(graph, _x86_quantizer(keep_float=keep_float))
        with torch.no_grad():
            for start in range(0, len(calib), 64):
                prepared(calib[start : start + 64])
        converted = convert_pt2e(prepared)
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        raise UnsupportedFormatError(f"{fmt}: PT2E quantization failed here ({str(exc).splitlines()[0]})") from None
    save_exported(converted, calib[:2], path)


@register_format("int8_static", ".pt2", "torchao-pt2e-x86-inductor", requires=_x86_int8)
def _int8_static(ckpt: Checkpoint, ctx: QuantContext, path: Path) -> None:
    _pt2e_static(ckpt, ctx, path, "int8_static")


def _check_modules(model: torch.nn.Module, names: tuple[str, ...], key: str) -> None:
    known = dict(model.named_modules())
    for name in names:
        if name not in known:
            raise UnsupportedFormatError(f"{key}: no module named {name!r} in this model")


@register_format("int8_mixed", ".pt2", "torchao-pt2e-x86-inductor", requires=_x86_int8)
def _int8_mixed(ckpt: Checkpoint, ctx: QuantContext, path: Path) -> dict[str, Any]:
    keep = ctx.cfg.mixed_float or (head_name(ckpt.arch),)
    _check_modules(ckpt.model, keep, "quantize.mixed_float")
    _pt2e_static(ckpt, ctx, path, "int8_mixed", keep)
    return {"float_modules": list(keep)}


@register_format("int8_qat", ".pt2", "torchao-pt2e-x86-inductor-qat", requires=_x86_int8)
def _int8_qat(ckpt: Checkpoint, ctx: QuantContext, path: Path) -> dict[str, Any]:
    """Fake-quantized training in the exported graph (BatchNorm still folds at conversion)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    if ctx.ds is None:
        raise UnsupportedFormatError("int8_qat: needs the training data")
    model = copy.deepcopy(ckpt.model).float().train()
    example = ctx.calib[:2].clone()
    graph = torch.export.export(model, (example,), dynamic_shapes=(_batch_dim(),)).module()
    prepared = prepare_qat_pt2e(graph, _x86_quantizer(is_qat=True))
    allow_exported_model_train_eval(prepared)  # lets the shared training loop call .train()/.eval()
    masks = sparsity_masks(ckpt.model)  # pruned weights stay zero through QAT
    params = dict(prepared.named_parameters())
    if missing := [k for k in masks if k not in params]:
        raise UnsupportedFormatError(f"int8_qat: cannot keep the pruning masks, {missing[0]} is not in the exported graph")
    cfg = dataclasses.replace(ctx.finetune, epochs=ctx.cfg.qat_epochs, lr=ctx.cfg.qat_lr)
    history = train_model(prepared, ctx.ds, cfg, masks=masks)
    move_exported_model_to_eval(prepared)
    save_exported(convert_pt2e(prepared), example, path)
    return {"qat_epochs": cfg.epochs, "qat_final_train_loss": history[-1]["train_loss"] if history else None}


def fixed_point(ckpt: Checkpoint, bits: int, cfg: QuantizeConfig, calib: torch.Tensor,
                ds: Dataset | None = None, finetune: FinetuneConfig | None = None) -> Checkpoint:
    """An N-bit fixed-point copy of ``ckpt`` (weights on the grid, activation grids attached)."""
    model = copy.deepcopy(ckpt.model).float()
    masks = sparsity_masks(model)  # pruned weights stay zero through fine-tuning
    layers = select_layers(model, cfg.fixed_layers, cfg.fixed_skip)
    if not layers:
        raise UnsupportedFormatError(f"fixed{bits}: quantize.fixed_layers / fixed_skip leave no conv or linear layer")
    fq = FixedPointModel(model, layers, bits, cfg.fixed_scheme == "symmetric",
                         cfg.fixed_granularity == "per_channel", bits if cfg.fixed_activations else 0)
    chunks = lambda: (calib[i : i + 64] for i in range(0, len(calib), 64))  # noqa: E731
    fq.calibrate(chunks())
    if cfg.fixed_epochs:
        if ds is None:
            raise UnsupportedFormatError(f"fixed{bits}: fine-tuning needs the training data")
        quantized = {f"{name}.weight" for name in layers}  # their float copies moved under parametrizations
        masks = {(f"{k[:-len('weight')]}parametrizations.weight.original" if k in quantized else k): v
                 for k, v in masks.items()}
        train_model(model, ds, dataclasses.replace(finetune or FinetuneConfig(), epochs=cfg.fixed_epochs,
                                                   lr=cfg.fixed_lr), masks=masks)
        fq.calibrate(chunks())  # activation ranges of the fine-tuned weights
    grids = fq.bake()
    config = {"format": f"fixed{bits}", "layers": layers} | {k: v for k, v in to_dict(cfg).items() if k.startswith("fixed_")}
    return ckpt.derive(model.eval(), "quantize", config, fake_quant=grids)


def _register_fixed(bits: int) -> None:
    @register_format(f"fixed{bits}", ".pt", "cnn-compress-fakequant")
    def _fixed(ckpt: Checkpoint, ctx: QuantContext, path: Path) -> dict[str, Any]:
        out = fixed_point(ckpt, bits, ctx.cfg, ctx.calib, ctx.ds, ctx.finetune)
        save_checkpoint(path, out)
        return {"bits": bits, "scheme": ctx.cfg.fixed_scheme, "granularity": ctx.cfg.fixed_granularity,
                "layers": len(out.history[-1]["config"]["layers"]), "fine_tune_epochs": ctx.cfg.fixed_epochs}


for _bits in range(2, 9):
    _register_fixed(_bits)
