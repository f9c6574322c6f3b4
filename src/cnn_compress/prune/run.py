"""The prune stage's work: prune a trained checkpoint for one variant and describe the result."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

from torch import nn

from cnn_compress.core.config import to_dict
from cnn_compress.core.errors import ConfigError
from cnn_compress.data.dataset import Dataset, balanced_subset, normalize
from cnn_compress.models.checkpoint import Checkpoint
from cnn_compress.models.user import is_import_path
from cnn_compress.models.zoo import count_macs, count_params, head_names
from cnn_compress.prune.config import PruneConfig
from cnn_compress.prune.pruning import (
    PRUNERS,
    AfterStep,
    PruneContext,
    global_sparsity,
    prune_model,
    sparsity_masks,
    structured_policy,
)
from cnn_compress.train.config import FinetuneConfig
from cnn_compress.train.distill import load_teacher
from cnn_compress.train.loop import setup_torch, train_model


def prune_checkpoint(ckpt: Checkpoint, ds: Dataset, cfg: PruneConfig,
                     step_cfg: FinetuneConfig | None) -> tuple[Checkpoint, dict[str, Any]]:
    """The pruned checkpoint and its summary (sparsity, params, MACs, policy).

    ``step_cfg``: the finetune settings trained between iterative steps (None: no training). With
    ``order: after_quantize`` the model passes through and the quantize stage prunes each artifact.
    """
    passes = cfg.passes()  # prune.then chains passes: each prunes what the one before left
    for p in passes:
        PRUNERS.check(p.method)  # a bad method fails before any work
    if cfg.allocation == "sensitivity" and not cfg.layer_ratios and cfg.order == "before_quantize":
        raise ConfigError("prune.allocation: sensitivity reached the prune stage unresolved; run the variants stage")
    setup_torch(step_cfg.seed if step_cfg else 0, step_cfg.threads if step_cfg else 2)
    images, labels = ds.split("train")
    pick = balanced_subset(labels, 8)  # traced on these; Taylor importance takes gradients on them
    held_out = None
    if any(p.method == "blocks" for p in passes):  # blocks are ranked by their effect on validation images
        val_images, val_labels = ds.split("val")
        keep = balanced_subset(val_labels, 32)
        held_out = (normalize(val_images[keep], ds.mean, ds.std), val_labels[keep]) if len(keep) else None
    heads = head_names(ckpt.arch, ckpt.model, ckpt.input_shape, ckpt.num_classes)
    ctx = PruneContext(normalize(images[pick], ds.mean, ds.std), labels[pick], heads, held_out,
                       probe=is_import_path(ckpt.arch))  # your own model: groups that break it stay whole
    macs_before = count_macs(ckpt.model, ckpt.input_shape)

    teacher = load_teacher(step_cfg.distill, ds) if step_cfg is not None else None  # finetune.distill

    def between(epochs: int) -> AfterStep:  # iterative schedules train between steps
        def after_step(model: nn.Module, step: int) -> None:
            if step_cfg is not None and epochs:
                train_model(model, ds, dataclasses.replace(step_cfg, epochs=epochs), masks=sparsity_masks(model),
                            teacher=teacher, label=f"prune step {step}")  # not "finetune": that stage comes later
        return after_step

    policy = structured_policy(ckpt.model) if any(p.method == "structured" for p in passes) else "all"
    if cfg.order == "after_quantize":
        policy, cfg = "deferred to quantize (prune.order: after_quantize)", dataclasses.replace(cfg, ratio=0.0)
        passes = [cfg]
    model = copy.deepcopy(ckpt.model)  # the caller's checkpoint stays as it was
    for p in passes:
        model = prune_model(model, p, ctx, between(p.step_epochs))
    total, nonzero = count_params(model)
    macs = count_macs(model, ckpt.input_shape)
    summary = {"sparsity": global_sparsity(model), "params": total, "params_nonzero": nonzero, "macs": macs,
               "macs_ratio": round(macs / macs_before, 4), "policy": policy, "ratio": cfg.ratio}
    return ckpt.derive(model, "prune", to_dict(cfg) | {"policy": policy}), summary
