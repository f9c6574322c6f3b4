"""Quantization formats: one handler per config class of ``quantize/config.py``.

- ``fp32``: the reference, the fine-tuned checkpoint as is.
- ``fp16``: half-precision weights and activations (a ``.pt`` checkpoint).
- ``int8_dynamic``: torchao int8 dynamic activation + int8 weight; it only touches linear
  layers, so a CNN barely changes (the studies' finding).
- ``int8_static``: post-training static INT8 through torchao PT2E with the X86 inductor quantizer,
  calibrated on a class-balanced subset of the training split.
- ``int8_mixed``: ``int8_static`` with the modules in ``float_modules`` (default: the
  classifier) left in FP32.
- ``int8_qat``: quantization-aware training (PT2E fake-quant, ``epochs``), then
  conversion to the same INT8 program as ``int8_static``.
- ``fixed`` (``fixed2`` .. ``fixed8``): N-bit fixed point simulated in float (``fakequant.py``), symmetric or
  asymmetric, per channel or per tensor, optionally fine-tuned through the straight-through
  estimator.
The INT8 artifacts are ``torch.export`` programs (``.pt2``) with a dynamic batch dimension.
Each artifact is run once right after it is built, so a format this machine cannot execute
fails here, naming the format, instead of later in the DAG.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnn_compress.core import atomic
from cnn_compress.core.config import to_dict
from cnn_compress.core.errors import UnsupportedFormatError
from cnn_compress.data.dataset import Dataset
from cnn_compress.models.checkpoint import Checkpoint, save_checkpoint
from cnn_compress.models.zoo import head_names
from cnn_compress.prune.pruning import sparsity_masks
from cnn_compress.quantize import ranges
from cnn_compress.quantize.config import (
    FixedConfig,
    FormatConfig,
    Fp16Config,
    Fp32Config,
    Int8DynamicConfig,
    Int8MixedConfig,
    Int8QatConfig,
    Int8StaticConfig,
    QuantizeConfig,
)
from cnn_compress.quantize.fakequant import FixedPointModel, select_layers
from cnn_compress.train.config import FinetuneConfig
from cnn_compress.train.loop import train_model

logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao import-time chatter


@dataclass(frozen=True)
class QuantContext:
    """What a format may need beyond the checkpoint and its own config."""

    calib: torch.Tensor  # normalised class-balanced training images
    ds: Dataset | None = None  # int8_qat and fine-tuned fixed<N> train on its training split
    finetune: FinetuneConfig = FinetuneConfig()  # batch size, momentum, seed... for QAT / STE epochs
    teacher: torch.nn.Module | None = None  # finetune.distill: QAT / STE epochs learn from it too


Handler = Callable[[Checkpoint, Any, QuantContext, Path], "dict[str, Any] | None"]
Transform = Callable[[Path], "dict[str, Any]"]  # applied to each written artifact (prune after quantize)


@dataclass(frozen=True)
class FormatHandler:
    build: Handler
    suffix: str
    backend: str  # recorded with the artifact: which library produced it
    requires: Callable[[], str | None]  # why this machine cannot build or run it (None when it can)


HANDLERS: dict[type[FormatConfig], FormatHandler] = {}  # keyed by config class, torchao style


def register_handler(cfg_type: type[FormatConfig], suffix: str, backend: str,
                     requires: Callable[[], str | None] = lambda: None) -> Callable[[Handler], Handler]:
    def deco(build: Handler) -> Handler:
        if cfg_type in HANDLERS:
            raise ValueError(f"a handler for {cfg_type.__name__} is registered twice")
        HANDLERS[cfg_type] = FormatHandler(build, suffix, backend, requires)
        return build

    return deco


def _x86_int8() -> str | None:
    """Why the x86 INT8 path cannot run here (None when it can)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return f"needs an x86 CPU for the X86 inductor INT8 kernels (this is {platform.machine()})"
    if not {"x86", "onednn", "fbgemm"} & set(torch.backends.quantized.supported_engines):
        return "this torch build has no x86 INT8 engine (torch.backends.quantized.supported_engines)"
    return None


def check_formats(cfg: QuantizeConfig) -> dict[str, FormatHandler]:
    """Resolve handlers up front, so an unrunnable format fails before any work is done."""
    resolved = {}
    for name, fmt in cfg.formats:
        handler = HANDLERS[type(fmt)]
        if reason := handler.requires():
            raise UnsupportedFormatError(f"quantize.formats.{name}: cannot run on this machine: {reason}")
        resolved[name] = handler
    return resolved


def quantize_all(ckpt: Checkpoint, cfg: QuantizeConfig, ctx: QuantContext, out_dir: Path,
                 transform: Transform | None = None) -> dict[str, Any]:
    """Write one artifact per format into ``out_dir`` plus ``manifest.json``; return the manifest.

    ``transform`` (prune after quantize) rewrites each artifact in place before its smoke run.
    """
    from cnn_compress.runtimes.runners import load_runner

    manifest: dict[str, Any] = {}
    for (name, fmt), handler in zip(cfg.formats, check_formats(cfg).values(), strict=True):
        path = out_dir / f"{name}{handler.suffix}"
        extra = handler.build(ckpt, fmt, ctx, path) or {}
        if transform is not None:
            extra |= transform(path)
        try:  # a smoke run now, not a crash in the benchmark stage later
            load_runner(path).predict(ctx.calib[:2])
        except Exception as exc:
            raise UnsupportedFormatError(f"quantize.formats.{name}: built but cannot run here "
                                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
        describe = fmt.describe() if hasattr(fmt, "describe") else fmt.TYPE
        manifest[name] = {"file": path.name, "type": fmt.TYPE, "describe": describe, "backend": handler.backend,
                          "calib_images": len(ctx.calib)} | extra
    atomic.write_json(out_dir / "manifest.json", manifest)
    return manifest


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


# Node metadata torch.export writes that differs between runs of the same inputs: ``from_node``
# (each node's pass history) holds ``graph_id``, the Python id() of a graph object, new in every
# process; ``stack_trace`` holds the absolute paths of this checkout and of the virtualenv, so a
# clone in another folder would hash differently. Neither is read when the program is loaded or run.
UNSTABLE_NODE_META = ("from_node", "stack_trace")


def strip_unstable_meta(program: torch.export.ExportedProgram) -> int:
    """Drop :data:`UNSTABLE_NODE_META` from every node (nested graphs included), so the same
    inputs give a byte-identical ``.pt2``; returns how many entries went."""
    dropped = 0
    for module in program.graph_module.modules():
        if isinstance(module, torch.fx.GraphModule):
            for node in module.graph.nodes:
                for key in UNSTABLE_NODE_META:
                    dropped += node.meta.pop(key, None) is not None
    return dropped


def save_exported(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Save a ``torch.export`` program with a dynamic batch (the example is cloned: a slice
    would drag its whole base tensor into the archive), byte-reproducible (no per-run metadata)."""
    if isinstance(model, torch.fx.GraphModule):
        drop_unused_tensors(model)
    program = torch.export.export(model, (example.clone(),), dynamic_shapes=(_batch_dim(),))
    strip_unstable_meta(program)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic.write_bytes(path, buf.getvalue())


@register_handler(Fp32Config, ".pt", f"torch-{torch.__version__}")
def _fp32(ckpt: Checkpoint, fmt: Fp32Config, ctx: QuantContext, path: Path) -> None:
    save_checkpoint(path, ckpt.derive(copy.deepcopy(ckpt.model).float(), "quantize", {"format": "fp32"}))


@register_handler(Fp16Config, ".pt", f"torch-{torch.__version__}")
def _fp16(ckpt: Checkpoint, fmt: Fp16Config, ctx: QuantContext, path: Path) -> None:
    model = copy.deepcopy(ckpt.model).half()
    save_checkpoint(path, ckpt.derive(model, "quantize", {"format": "fp16"}, dtype="float16"))


@register_handler(Int8DynamicConfig, ".pt2", "torchao-int8-dynamic")
def _int8_dynamic(ckpt: Checkpoint, fmt: Int8DynamicConfig, ctx: QuantContext, path: Path) -> None:
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


@register_handler(Int8StaticConfig, ".pt2", "torchao-pt2e-x86-inductor", requires=_x86_int8)
def _int8_static(ckpt: Checkpoint, fmt: Int8StaticConfig, ctx: QuantContext, path: Path) -> None:
    _pt2e_static(ckpt, ctx, path, path.stem)


def _check_modules(model: torch.nn.Module, names: tuple[str, ...], key: str) -> None:
    known = dict(model.named_modules())
    for name in names:
        if name not in known:
            raise UnsupportedFormatError(f"{key}: no module named {name!r} in this model")


@register_handler(Int8MixedConfig, ".pt2", "torchao-pt2e-x86-inductor", requires=_x86_int8)
def _int8_mixed(ckpt: Checkpoint, fmt: Int8MixedConfig, ctx: QuantContext, path: Path) -> dict[str, Any]:
    keep = fmt.float_modules or head_names(ckpt.arch, ckpt.model, ckpt.input_shape, ckpt.num_classes)
    _check_modules(ckpt.model, keep, f"quantize.formats.{path.stem}.float_modules")
    _pt2e_static(ckpt, ctx, path, path.stem, keep)
    return {"float_modules": list(keep)}


_CONV_KINDS = {"conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"}


@contextlib.contextmanager
def _fold_only_present_convs(graph: torch.fx.GraphModule) -> Iterator[None]:
    """Skip torchao's BatchNorm folding patterns for convolution kinds the graph does not hold.

    ``convert_pt2e`` traces ~100 match/replace patterns (four convolution kinds x twelve variants),
    about 40 s on two cores whatever the model's size; a CNN of 2-D convolutions needs a quarter
    of them. A pattern for an absent kind cannot match, so the result is the same graph.
    """
    from torchao.quantization.pt2e import qat_utils

    stock = getattr(qat_utils, "_fold_conv_bn_qat_helper", None)
    present = {str(n.target).split(".")[1] for n in graph.graph.nodes
               if n.op == "call_function" and str(n.target).startswith("aten.conv")}
    if stock is None or not present <= _CONV_KINDS:  # an unknown kind: keep every pattern
        yield
        return

    def helper(m: torch.fx.GraphModule, conv_fn: Callable, *args: Any, **kwargs: Any) -> torch.fx.GraphModule:
        return stock(m, conv_fn, *args, **kwargs) if conv_fn.__name__ in present else m

    qat_utils._fold_conv_bn_qat_helper = helper
    try:
        yield
    finally:
        qat_utils._fold_conv_bn_qat_helper = stock


@register_handler(Int8QatConfig, ".pt2", "torchao-pt2e-x86-inductor-qat", requires=_x86_int8)
def _int8_qat(ckpt: Checkpoint, fmt: Int8QatConfig, ctx: QuantContext, path: Path) -> dict[str, Any]:
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
    # fake quantization simulates the integer grid in float32: no autocast (bf16 has 8 significant bits)
    cfg = dataclasses.replace(ctx.finetune, epochs=fmt.epochs, lr=fmt.lr, amp="off")
    history = train_model(prepared, ctx.ds, cfg, masks=masks, resume=path, teacher=ctx.teacher,
                          run_key=to_dict(fmt), label=f"QAT {path.stem}")
    move_exported_model_to_eval(prepared)
    with _fold_only_present_convs(prepared):
        converted = convert_pt2e(prepared)
    save_exported(converted, example, path)
    return {"qat_epochs": cfg.epochs, "qat_final_train_loss": history[-1]["train_loss"] if history else None}


def fixed_point(ckpt: Checkpoint, cfg: FixedConfig, calib: torch.Tensor,
                ds: Dataset | None = None, finetune: FinetuneConfig | None = None,
                resume: Path | None = None, teacher: torch.nn.Module | None = None) -> Checkpoint:
    """An N-bit fixed-point copy of ``ckpt`` (weights on the grid, activation grids attached);
    fine-tuning resumes under the name ``resume`` when given."""
    bits = cfg.bits
    model = copy.deepcopy(ckpt.model).float()
    masks = sparsity_masks(model)  # pruned weights stay zero through fine-tuning
    layers = select_layers(model, cfg.layers, cfg.skip)
    if not layers:
        raise UnsupportedFormatError(f"fixed{bits}: its layers / skip leave no conv or linear layer")
    if cfg.allocation == "sensitivity" and not cfg.layer_bits:
        raise UnsupportedFormatError(f"fixed{bits}: allocation: sensitivity reached the quantize stage unresolved; "
                                     "run the variants stage")
    if unknown := sorted(set(cfg.layer_bits) - set(layers)):
        raise UnsupportedFormatError(f"fixed{bits}: layer_bits names {unknown[0]!r}, not one of its quantized layers")
    fq = FixedPointModel(model, layers, bits, cfg.scheme == "symmetric", cfg.granularity == "per_channel",
                         bits if cfg.activations else 0, layer_bits=cfg.layer_bits)
    if cfg.weight_range == "mse":
        ranges.use_mse_weights(fq, cfg.scheme == "symmetric", cfg.granularity == "per_channel")
    chunks = lambda: (calib[i : i + 64] for i in range(0, len(calib), 64))  # noqa: E731
    calibrate = (fq.calibrate if cfg.act_range == "minmax" else  # noqa: E731
                 lambda b: ranges.estimate_activation_ranges(fq, b, cfg.act_range, cfg.act_percentile))
    calibrate(chunks())
    if cfg.epochs:
        if ds is None:
            raise UnsupportedFormatError(f"fixed{bits}: fine-tuning needs the training data")
        quantized = {f"{name}.weight" for name in layers}  # their float copies moved under parametrizations
        masks = {(f"{k[:-len('weight')]}parametrizations.weight.original" if k in quantized else k): v
                 for k, v in masks.items()}
        ste = dataclasses.replace(finetune or FinetuneConfig(), epochs=cfg.epochs, lr=cfg.lr, amp="off")  # float32 grid
        train_model(model, ds, ste, masks=masks, resume=resume, teacher=teacher, run_key=[to_dict(cfg), layers],
                    label=f"fixed-point fine-tuning {Path(resume).stem if resume else f'fixed{bits}'}")
        calibrate(chunks())  # activation ranges of the fine-tuned weights
    grids = fq.bake()
    config = {"format": "fixed", "settings": to_dict(cfg), "layers": layers}
    return ckpt.derive(model.eval(), "quantize", config, fake_quant=grids)


@register_handler(FixedConfig, ".pt", "cnn-compress-fakequant")
def _fixed(ckpt: Checkpoint, fmt: FixedConfig, ctx: QuantContext, path: Path) -> dict[str, Any]:
    out = fixed_point(ckpt, fmt, ctx.calib, ctx.ds, ctx.finetune, resume=path, teacher=ctx.teacher)
    save_checkpoint(path, out)
    quantized = out.history[-1]["config"]["layers"]
    weights = dict(out.model.named_modules())
    counts = {n: weights[n].weight.numel() for n in quantized}
    mean_bits = sum(fmt.layer_bits.get(n, fmt.bits) * c for n, c in counts.items()) / max(sum(counts.values()), 1)
    return {"bits": fmt.bits, "mean_bits": round(mean_bits, 4), "scheme": fmt.scheme, "granularity": fmt.granularity,
            "layers": len(out.history[-1]["config"]["layers"]), "fine_tune_epochs": fmt.epochs}
