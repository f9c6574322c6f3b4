"""Quantize-then-prune, in one place: a transform on a quantized artifact.

With ``prune.order: after_quantize`` a variant's prune stage passes the trained model through
unchanged and the quantize stage hands each artifact it writes to :func:`prune_artifact`, which
zeroes that artifact's own weights at the variant's ratio: fp16 values, the grid values of a
simulated fixed-point checkpoint, or the INT8 codes of a PT2E program.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from cnn_compress.core import atomic
from cnn_compress.core.config import to_dict
from cnn_compress.core.errors import UnsupportedFormatError
from cnn_compress.models.checkpoint import load_checkpoint, save_checkpoint
from cnn_compress.prune.config import PRUNABLE_AFTER_QUANTIZE as PRUNABLE_TYPES
from cnn_compress.prune.config import PruneConfig
from cnn_compress.prune.pruning import global_sparsity, prune_int8_program, prune_model


def active(cfg: PruneConfig) -> bool:
    return cfg.order == "after_quantize" and cfg.ratio > 0


def check(types: dict[str, str]) -> None:
    """``types``: artifact name -> format type; each must be prunable after quantization."""
    if bad := [name for name, t in types.items() if t not in PRUNABLE_TYPES]:
        raise UnsupportedFormatError(f"prune.order: after_quantize cannot prune the weights of {', '.join(bad)} "
                                     f"(supported types: {', '.join(PRUNABLE_TYPES)})")


def prune_artifact(path: Path, cfg: PruneConfig) -> dict[str, Any]:
    """Prune one artifact in place; returns what to record in the quantize manifest."""
    if path.suffix == ".pt":
        ckpt = load_checkpoint(path)
        model = prune_model(ckpt.model, cfg)
        save_checkpoint(path, ckpt.derive(model, "prune", to_dict(cfg), fake_quant=ckpt.fake_quant))
        return {"pruned_after_quantize": global_sparsity(model)}
    # the Q/DQ ops INT8 programs name (torch's registration: torchao's import costs 4 s; pickled
    # torchao tensor subclasses import torchao themselves)
    from torch.ao.quantization.fx import _decomposed  # noqa: F401

    program = torch.export.load(path)
    zeroed = prune_int8_program(program, cfg)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic.write_bytes(path, buf.getvalue())
    return {"pruned_after_quantize_weights": zeroed}
