"""Measure each layer's sensitivity: accuracy with only that layer pruned, or only it quantized.

The model is scored on class-balanced images of one split (the validation split by default, so
allocations are not chosen on the test images). Pruning is L1 magnitude, like
``l1_unstructured``; quantization is the fixed-point grid of ``quantize/fakequant.py`` on the
layer's weights. The result is plain data (``sensitivity/sensitivity.json``) that the variants
stage turns into per-layer ratios or bit widths.
"""
from __future__ import annotations

import copy
import sys
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from cnn_compress.core.config import to_dict
from cnn_compress.core.errors import DataError
from cnn_compress.data.dataset import Dataset, balanced_subset
from cnn_compress.data.evaluation import predict_logits, score
from cnn_compress.models.checkpoint import Checkpoint
from cnn_compress.prune.pruning import prunable_layers
from cnn_compress.quantize import ranges
from cnn_compress.quantize.fakequant import FixedPointModel
from cnn_compress.sensitivity.config import SensitivityConfig


def l1_zeroed(weight: torch.Tensor, ratio: float) -> torch.Tensor:
    """``weight`` with its ``round(ratio * n)`` smallest-magnitude entries set to zero."""
    flat = weight.detach().flatten().clone()
    flat[torch.argsort(flat.abs(), stable=True)[: round(ratio * flat.numel())]] = 0
    return flat.view_as(weight)


def quantized_copy(model: nn.Module, layer: str, bits: int, cfg: SensitivityConfig) -> nn.Module:
    """A copy of ``model`` with only ``layer``'s weights on a ``bits``-bit grid."""
    out = copy.deepcopy(model)
    fq = FixedPointModel(out, [layer], bits, cfg.scheme == "symmetric", cfg.granularity == "per_channel", 0)
    if cfg.weight_range == "mse":
        ranges.use_mse_weights(fq, cfg.scheme == "symmetric", cfg.granularity == "per_channel")
    fq.bake()
    return out.eval()


def empty_table(cfg: SensitivityConfig) -> dict[str, Any]:
    """The table of a switched-off stage: no layers, nothing to allocate from."""
    return {"config": to_dict(cfg), "layers": []}


def analyze(ckpt: Checkpoint, ds: Dataset, cfg: SensitivityConfig) -> dict[str, Any]:
    """Every prunable layer's accuracy at each ratio and bit width of ``cfg`` (top-1, percent)."""
    result = empty_table(cfg)
    images, labels = ds.split(cfg.split)
    if cfg.images:
        per_class = max(1, -(-cfg.images // ds.num_classes))
        pick = balanced_subset(labels, per_class)[: cfg.images]
        images, labels = images[pick], labels[pick]
    if len(labels) == 0:
        raise DataError(f"sensitivity.split: the {cfg.split} split is empty")
    model = ckpt.model.float().eval()

    def top1(m: nn.Module) -> float:
        return score(predict_logits(m, images, ds.mean, ds.std, cfg.batch_size), labels)["top1"]

    result |= {"split": cfg.split, "images": len(labels), "baseline_top1": top1(model)}
    layers = prunable_layers(model)
    bar = tqdm(total=len(layers) * (len(cfg.ratios) + len(cfg.bits)), desc="sensitivity", unit="eval",
               disable=not sys.stderr.isatty())
    for name, module in layers:
        row: dict[str, Any] = {"layer": name, "params": module.weight.numel(), "prune": {}, "bits": {}}
        original = module.weight.detach().clone()
        for r in cfg.ratios:
            with torch.no_grad():
                module.weight.copy_(l1_zeroed(original, r))
            row["prune"][str(r)] = top1(model)
            bar.update()
        with torch.no_grad():
            module.weight.copy_(original)
        for b in cfg.bits:
            row["bits"][str(b)] = top1(quantized_copy(model, name, b, cfg))
            bar.update()
        result["layers"].append(row)
    bar.close()
    return result
