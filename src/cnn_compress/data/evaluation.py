"""Accuracy of any runtime: a predict function over normalised batches, scored on a named split
(train, val, test, and select / report when prepared: ``Dataset.split``)."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnn_compress.core.errors import DataError
from cnn_compress.data.dataset import batches, normalize

Predict = Callable[[torch.Tensor], torch.Tensor]  # normalised float32 batch -> float32 logits


def predict_logits(
    predict: Predict, images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], batch_size: int
) -> torch.Tensor:
    """Logits for uint8 ``images``, batch by batch, in order."""
    outs = []
    with torch.inference_mode():
        for idx in batches(len(images), batch_size):
            outs.append(predict(normalize(images[idx], mean, std)).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def score(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1, top-5 (in percent) and mean cross-entropy."""
    if len(labels) == 0:  # an empty split would score NaN, or fail deep inside topk
        raise DataError("no images to score: the split is empty (data.val_fraction: 0 leaves val empty)")
    k = min(5, logits.shape[1])
    top5 = logits.topk(k, dim=1).indices
    return {
        "top1": round(100.0 * (top5[:, 0] == labels).float().mean().item(), 4),
        "top5": round(100.0 * (top5 == labels[:, None]).any(1).float().mean().item(), 4),
        "loss": round(F.cross_entropy(logits, labels).item(), 6),
    }


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """How closely two runtimes agree: top-1 agreement (%) and max absolute logit difference."""
    return {
        "top1_agreement": round(100.0 * (a.argmax(1) == b.argmax(1)).float().mean().item(), 4),
        "max_abs_diff": round((a - b).abs().max().item(), 6),
    }
