"""Training and fine-tuning: SGD + momentum + weight decay + cosine schedule, on tensors.

With a fixed seed and thread count, CPU training is bit-for-bit reproducible (deterministic
algorithms, one generator for shuffling and augmentation, no time-dependent state), so re-running
an unchanged stage writes the same bytes and nothing downstream re-runs.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnn_compress.config import TrainConfig
from cnn_compress.data import Dataset, augment, batches, normalize
from cnn_compress.errors import ConfigError
from cnn_compress.evaluation import predict_logits, score


def setup_torch(seed: int, threads: int) -> None:
    """Seed everything and pin threads: the preconditions of reproducible CPU runs."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' requested but CUDA is not available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cosine_lr(base: float, step: int, total: int) -> float:
    return 0.5 * base * (1 + math.cos(math.pi * step / max(total, 1)))


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights again (momentum would otherwise revive them)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)


def train_model(
    model: nn.Module,
    ds: Dataset,
    cfg: TrainConfig,
    masks: dict[str, torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """Train in place; return one row per epoch (loss, accuracy, val loss/accuracy, lr)."""
    device = resolve_device(cfg.device)
    model.to(device)
    masks = {k: v.to(device) for k, v in (masks or {}).items()}
    x_all, y_all = (t.to(device) for t in ds.split("train"))
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay,
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    total = cfg.epochs * math.ceil(len(y_all) / cfg.batch_size)
    step, history = 0, []
    bar = tqdm(range(cfg.epochs), desc=cfg.SECTION, unit="epoch", disable=not sys.stderr.isatty())
    for epoch in bar:
        model.train()
        loss_sum = correct = seen = 0.0
        lr = cfg.lr
        for idx in batches(len(y_all), cfg.batch_size, gen):
            if len(idx) < 2:  # BatchNorm cannot train on a single image
                continue
            lr = cosine_lr(cfg.lr, step, total)
            for group in opt.param_groups:
                group["lr"] = lr
            x = augment(normalize(x_all[idx.to(device)], ds.mean, ds.std), cfg.crop_pad, cfg.flip, gen)
            y = y_all[idx.to(device)]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if masks:
                apply_masks(model, masks)
            step += 1
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        row = {"epoch": epoch + 1, "lr": round(lr, 8), "train_loss": round(loss_sum / max(seen, 1), 6),
               "train_acc": round(100.0 * correct / max(seen, 1), 4)}
        if len(ds.splits["val"]):
            val = evaluate(model, ds, "val")
            row |= {"val_loss": val["loss"], "val_acc": val["top1"]}
        history.append(row)
        bar.set_postfix(loss=row["train_loss"], val_acc=row.get("val_acc"))
    model.cpu().eval()
    return history


def evaluate(model: nn.Module, ds: Dataset, split: str = "test", batch_size: int = 256) -> dict[str, float]:
    """Top-1 / top-5 / loss of a torch model on one split of a prepared data set."""
    model.eval()
    param = next(model.parameters())
    images, labels = ds.split(split)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device=param.device, dtype=param.dtype))

    return score(predict_logits(predict, images, ds.mean, ds.std, batch_size), labels)
