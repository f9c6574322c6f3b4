"""Knowledge distillation: the soft-target loss and the teacher it learns from (``finetune.distill``)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cnn_compress.core.errors import ConfigError
from cnn_compress.core.stage import BASELINE
from cnn_compress.data.dataset import Dataset
from cnn_compress.train.config import DistillConfig


def load_teacher(cfg: DistillConfig | None, ds: Dataset) -> nn.Module | None:
    """The teacher model in eval mode, or None when distillation is off. It must know the data's
    classes in the data's order (its outputs are matched class by class). A ``teacher`` path is
    not a DVC dependency of the stages: replacing that file does not re-run them."""
    if cfg is None or cfg.weight == 0:
        return None
    from cnn_compress.models.checkpoint import load_checkpoint

    path = BASELINE if cfg.teacher == "baseline" else Path(cfg.teacher)
    ckpt = load_checkpoint(path)
    if list(ckpt.class_names) != list(ds.class_names):
        raise ConfigError(f"finetune.distill.teacher: {path} was trained on other classes ({len(ckpt.class_names)}: "
                          f"{', '.join(map(str, ckpt.class_names[:3]))}...) than the data's")
    if tuple(ckpt.mean) != tuple(ds.mean) or tuple(ckpt.std) != tuple(ds.std):
        print(f"warning: finetune.distill.teacher: {path} was trained with another normalisation than the data's",
              file=sys.stderr)
    teacher = ckpt.model.float().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def distill_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, hard: torch.Tensor,
                 cfg: DistillConfig) -> torch.Tensor:
    """(1 - w) * hard-label loss + w * T^2 * KL(teacher || student) at temperature T (T^2 keeps the
    soft term's gradient scale independent of T)."""
    t = cfg.temperature
    soft = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    return (1 - cfg.weight) * hard + cfg.weight * soft
