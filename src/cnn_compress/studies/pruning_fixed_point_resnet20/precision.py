"""Training throughput per precision, timed interleaved in one process (the study's amp table).

The fine-tuning runs give each precision's accuracy, but their images/s come from separate stage
runs, whose machine load may differ. Here one model and optimiser per precision take turns, round
by round (the first one rotating), with the training step of ``train/loop.py`` (``Precision``:
autocast around the forward pass, the loss in float32, a gradient scaler for fp16) on the same
normalised, cropped and flipped batches, so drift hits every precision alike.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn.functional as F

from cnn_compress.data.dataset import augment, normalize
from cnn_compress.measure.benchmark import median_ci95
from cnn_compress.models.checkpoint import Checkpoint
from cnn_compress.train.config import TrainConfig
from cnn_compress.train.loop import Precision, resolve_device


def interleaved_throughput(ckpt: Checkpoint, modes: list[str], batch: int, rounds: int, steps: int = 1,
                           threads: int = 2, seed: int = 0) -> dict[str, list[float]]:
    """Images/s of ``steps`` training steps per precision (``off``, ``bf16``, ``fp16``), per round."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    device = resolve_device("auto")
    gen = torch.Generator().manual_seed(seed)
    shape = tuple(ckpt.input_shape[-3:])
    images = torch.randint(0, 256, (steps * batch, *shape), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, ckpt.num_classes, (steps * batch,), generator=gen)
    batches = [(augment(normalize(images[i:i + batch], ckpt.mean, ckpt.std), 4, True, gen).to(device),
                labels[i:i + batch].to(device)) for i in range(0, len(labels), batch)]
    runs = {m: _Trainer(ckpt.model, m, device) for m in modes}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for run in runs.values():  # warm-up: allocator, kernels, autocast's weight casts
        run.step(*batches[0])
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(rounds):
        for m in modes[r % len(modes):] + modes[:r % len(modes)]:
            sync()
            start = time.perf_counter()
            for x, y in batches:
                runs[m].step(x, y)
            sync()
            rates[m].append(len(labels) / (time.perf_counter() - start))
    return rates


def summarize(rates: dict[str, list[float]], reference: str) -> dict[str, dict[str, float]]:
    """Per precision: the median images/s and the median ratio of the paired rounds to ``reference``,
    each with its distribution-free 95% interval."""
    out = {}
    for mode, values in rates.items():
        ratios = [v / r for v, r in zip(values, rates[reference], strict=True)]
        (lo, hi), (rlo, rhi) = median_ci95(values), median_ci95(ratios)
        out[mode] = {"images_per_s": round(statistics.median(values), 2), "images_per_s_lo": round(lo, 2),
                     "images_per_s_hi": round(hi, 2), "ratio": round(statistics.median(ratios), 4),
                     "ratio_lo": round(rlo, 4), "ratio_hi": round(rhi, 4)}
    return out


class _Trainer:
    """One precision's copy of the model, its optimiser and step (what ``train_model`` does per batch)."""

    def __init__(self, model: torch.nn.Module, amp: str, device: torch.device) -> None:
        self.model = copy.deepcopy(model).to(device).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        self.precision = Precision(TrainConfig(amp=amp, device=device.type), device)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self.precision.autocast():
            logits = self.model(x)
        self.precision.step(F.cross_entropy(logits.float(), y), self.opt)
