"""Params, nonzero params, sparsity and MACs measured from the artifact itself, whatever its format.

Every figure a benchmark row reports describes the file it names: an INT8 program is counted from
its INT8 weight tensors, an ONNX model from its initializers, so a variant pruned after
quantization shows its own sparsity. The definitions are the same for every format: ``params``
counts the weights and biases of conv and linear layers (BatchNorm may be folded away in one
format and not another), ``sparsity`` is the percentage of zero conv / linear *weights* (what
pruning removes), ``macs`` the multiply-accumulates of conv and linear layers at batch 1.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnn_compress.core.errors import CheckpointError
from cnn_compress.models.checkpoint import load_checkpoint
from cnn_compress.models.zoo import count_macs

Layer = tuple[torch.Tensor | Any, Any, int]  # (weight, bias or None, MACs of the layer at batch 1)
STATS: dict[str, Callable[[Path], list[Layer]]] = {}


def register_stats(suffix: str) -> Callable[[Callable[[Path], list[Layer]]], Callable[[Path], list[Layer]]]:
    def deco(func: Callable[[Path], list[Layer]]) -> Callable[[Path], list[Layer]]:
        STATS[suffix] = func
        return func

    return deco


def _count(t: Any) -> tuple[int, int]:
    """(elements, nonzero elements) of a torch tensor or numpy array."""
    if isinstance(t, torch.Tensor):
        return t.numel(), int(torch.count_nonzero(t))
    return int(t.size), int((t != 0).sum())


def artifact_stats(path: Path) -> dict[str, Any]:
    """params, params_nonzero, sparsity (%), macs and layers of one artifact."""
    reader = STATS.get(path.suffix)
    if reader is None:
        raise CheckpointError(f"{path}: cannot count the weights of '{path.suffix}' files")
    layers = reader(path)
    weights = [_count(w) for w, _, _ in layers]
    biases = [_count(b) for _, b, _ in layers if b is not None]
    w_total, w_nonzero = sum(n for n, _ in weights), sum(nz for _, nz in weights)
    total = w_total + sum(n for n, _ in biases)
    nonzero = w_nonzero + sum(nz for _, nz in biases)
    return {"params": total, "params_nonzero": nonzero, "layers": len(layers),
            "sparsity": round(100.0 * (w_total - w_nonzero) / max(w_total, 1), 4),
            "macs": sum(m for _, _, m in layers)}


@register_stats(".pt")
def _checkpoint(path: Path) -> list[Layer]:
    ckpt = load_checkpoint(path)
    model = ckpt.model.float()
    layers = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            layers.append((m.weight.detach(), None if m.bias is None else m.bias.detach(), 0))
    macs = count_macs(model, ckpt.input_shape)
    return [(w, b, macs if i == 0 else 0) for i, (w, b, _) in enumerate(layers)]


def _source_tensor(node: Any, gm: torch.fx.GraphModule) -> torch.Tensor | None:
    """Follow a weight argument back through dequantize / cast ops to the stored tensor."""
    seen = 0
    while node is not None and seen < 8:
        if node.op == "get_attr":
            obj = gm
            for part in str(node.target).split("."):
                obj = getattr(obj, part)
            return obj if isinstance(obj, torch.Tensor) else None
        if node.op != "call_function" or not node.args:
            return None
        node, seen = node.args[0] if isinstance(node.args[0], torch.fx.Node) else None, seen + 1
    return None


@register_stats(".pt2")
def _program(path: Path) -> list[Layer]:
    from cnn_compress.runtimes.runners import load_program

    gm = load_program(path).module()
    layers = []
    for node in gm.graph.nodes:
        name = str(node.target)
        if node.op != "call_function" or not any(k in name for k in ("conv2d", "convolution", "linear")):
            continue
        weight = _source_tensor(node.args[1], gm) if len(node.args) > 1 else None
        if weight is None or weight.dim() not in (2, 4):
            continue
        bias_arg = node.args[2] if len(node.args) > 2 else None
        bias = _source_tensor(bias_arg, gm) if isinstance(bias_arg, torch.fx.Node) else None
        out = node.meta.get("val")
        per_out = math.prod(int(d) for d in out.shape[1:]) if out is not None else weight.shape[0]
        layers.append((weight, bias, per_out * math.prod(weight.shape[1:])))
    return layers


@register_stats(".onnx")
def _onnx(path: Path) -> list[Layer]:
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    inits = {t.name: t for t in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    shapes |= {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output}

    def stored(name: str) -> Any:
        for _ in range(8):  # through DequantizeLinear / Cast / Identity to the initializer
            if name in inits:
                return numpy_helper.to_array(inits[name])
            node = producers.get(name)
            if node is None or not node.input:
                return None
            name = node.input[0]
        return None

    layers = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        weight = stored(node.input[1])
        if weight is None or weight.ndim not in (2, 4):
            continue
        bias = stored(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        out = shapes.get(node.output[0], [])
        per_out = math.prod(out[1:]) if len(out) > 1 and all(out[1:]) else weight.shape[0]
        k = math.prod(weight.shape[1:]) if weight.ndim == 4 or node.op_type == "Gemm" else weight.shape[0]
        layers.append((weight, bias, per_out * k))
    return layers


@register_stats(".xml")
def _openvino(path: Path) -> list[Layer]:
    """OpenVINO IR: conv and MatMul weights through NNCF's decompression to the INT8 constants."""
    from cnn_compress.runtimes import ov_runtime

    return ov_runtime.layers(path)
