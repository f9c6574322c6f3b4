"""Pruning methods, one handler per ``prune.method`` in a registry.

Unstructured L1 pruning zeroes the smallest-magnitude weights of conv and linear layers, with one
global threshold or the same ratio per layer; the masks are made permanent (plain zeros in a plain
tensor), so the pruned checkpoint loads like any other and fine-tuning recovers the masks from
the zeros.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from cnn_compress.config import PruneConfig
from cnn_compress.errors import ConfigError

Pruner = Callable[[nn.Module, PruneConfig], nn.Module]
_PRUNERS: dict[str, Pruner] = {}
PRUNABLE = (nn.Conv2d, nn.Linear)


def register_pruner(name: str) -> Callable[[Pruner], Pruner]:
    def deco(fn: Pruner) -> Pruner:
        _PRUNERS[name] = fn
        return fn

    return deco


def pruner_names() -> list[str]:
    return sorted(_PRUNERS)


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]


def prune_model(model: nn.Module, cfg: PruneConfig) -> nn.Module:
    """Prune ``model`` with the method ``cfg.method`` names; returns the pruned model."""
    if cfg.method not in _PRUNERS:
        raise ConfigError(f"prune.method: unknown method {cfg.method!r} (known: {', '.join(pruner_names())})")
    return _PRUNERS[cfg.method](model, cfg)


@register_pruner("l1_unstructured")
def l1_unstructured(model: nn.Module, cfg: PruneConfig) -> nn.Module:
    layers = prunable_layers(model)
    if cfg.ratio == 0:
        return model
    if cfg.scope == "global":
        torch_prune.global_unstructured(
            [(m, "weight") for _, m in layers], pruning_method=torch_prune.L1Unstructured, amount=cfg.ratio
        )
    else:
        for _, m in layers:
            torch_prune.l1_unstructured(m, "weight", amount=cfg.ratio)
    for _, m in layers:
        torch_prune.remove(m, "weight")  # make the mask permanent: zeros in a plain parameter
    return model


def sparsity_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks (1 = kept) of every prunable weight that has zeros, keyed by parameter name."""
    masks = {}
    for name, m in prunable_layers(model):
        mask = (m.weight != 0).to(m.weight.dtype)
        if not bool(mask.all()):
            masks[f"{name}.weight" if name else "weight"] = mask
    return masks


def layer_sparsity(model: nn.Module) -> list[dict[str, Any]]:
    """Per-layer weight counts and sparsity (percent) of the prunable layers."""
    rows = []
    for name, m in prunable_layers(model):
        n = m.weight.numel()
        zeros = n - int(torch.count_nonzero(m.weight))
        rows.append({"layer": name, "params": n, "zeros": zeros, "sparsity": round(100.0 * zeros / n, 4)})
    return rows


def global_sparsity(model: nn.Module) -> float:
    rows = layer_sparsity(model)
    total = sum(r["params"] for r in rows)
    return round(100.0 * sum(r["zeros"] for r in rows) / max(total, 1), 4)
