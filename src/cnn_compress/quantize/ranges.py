"""Range estimators for fixed-point grids: min/max, percentile and MSE-optimal clipping.

Min/max lets the largest value set the grid's step; at 4 bits and below one outlier weight (or a
rare large activation) then leaves most values on a handful of levels. Clipping the range trades a
large error on a few values for a small one on all of them. ``mse`` picks, per row (output channel
or tensor), the fraction of the min/max range that minimises the mean squared rounding error;
``percentile`` (activations) drops the tails. Both are the estimators of the usual PTQ toolkits
(AIMET's "tf-enhanced", NNCF's and TensorRT's percentile / MSE calibrators).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from cnn_compress.quantize.fakequant import FixedPointModel, Grid, WeightQuantizer, fake_quantize

CLIP_FRACTIONS = torch.linspace(0.2, 1.0, 81)  # fractions of the min/max range `mse` tries
SAMPLE_PER_BATCH = 65536  # activation values kept per layer and calibration batch


def rounding_error(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Mean squared error per row of ``x`` (rows x values) rounded onto the grid covering [lo, hi]."""
    scale, zero = grid.qparams(lo, hi)
    q = torch.clamp(torch.round(x / scale) + zero, grid.qmin, grid.qmax)
    return ((q - zero) * scale - x).pow(2).mean(1)


def mse_range(x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (lo, hi), shape (rows, 1): the clipped min/max range with the least rounding error."""
    lo0 = torch.clamp(x.min(1, keepdim=True).values, max=0.0)
    hi0 = torch.clamp(x.max(1, keepdim=True).values, min=0.0)
    errors = torch.stack([rounding_error(x, lo0 * a, hi0 * a, grid) for a in CLIP_FRACTIONS.tolist()])
    best = CLIP_FRACTIONS.to(x)[errors.argmin(0)].unsqueeze(1)
    return lo0 * best, hi0 * best


def percentile_range(x: torch.Tensor, q: float) -> tuple[float, float]:
    """The (100 - q)th and qth percentiles of a flat sample."""
    qs = torch.tensor([1.0 - q / 100.0, q / 100.0], dtype=x.dtype)
    lo, hi = torch.quantile(x, qs).tolist()
    return lo, hi


class MseWeightQuantizer(WeightQuantizer):
    """A weight parametrization whose grid covers the MSE-optimal clipped range (re-chosen every
    forward, so straight-through fine-tuning keeps it optimal as the weights move)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        flat = w.detach().reshape(w.shape[0], -1) if self.per_channel else w.detach().reshape(1, -1)
        lo, hi = mse_range(flat, self.grid)
        shape = (-1,) + (1,) * (w.dim() - 1) if self.per_channel else ()
        scale, zero = self.grid.qparams(lo.reshape(shape), hi.reshape(shape))
        return fake_quantize(w, scale, zero, self.grid)


def use_mse_weights(fq: FixedPointModel, symmetric: bool, per_channel: bool) -> None:
    """Swap the min/max weight quantizer of every quantized layer for the MSE-clipped one (each
    layer at its own width)."""
    modules = dict(fq.model.named_modules())
    for name in fq.layers:
        modules[name].parametrizations.weight[0] = MseWeightQuantizer(Grid(fq.bits[name], symmetric), per_channel)


@torch.no_grad()
def estimate_activation_ranges(fq: FixedPointModel, batches: Iterator[torch.Tensor], method: str,
                               percentile: float) -> None:
    """Set every activation grid's range from a sample of the layer's calibration inputs."""
    modules = dict(fq.model.named_modules())
    samples: dict[str, list[torch.Tensor]] = {name: [] for name in fq.acts}
    gen = torch.Generator().manual_seed(0)

    def sampler(name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            flat = args[0].detach().reshape(-1).float()
            if flat.numel() > SAMPLE_PER_BATCH:
                flat = flat[torch.randint(flat.numel(), (SAMPLE_PER_BATCH,), generator=gen)]
            samples[name].append(flat)
        return hook

    for hook in fq.acts.values():
        hook.observing = True  # pass-through: the sample sees float inputs, as min/max calibration does
    handles = [modules[name].register_forward_pre_hook(sampler(name)) for name in fq.acts]
    try:
        fq.model.eval()
        for x in batches:
            fq.model(x)
    finally:
        for h in handles:
            h.remove()
        for hook in fq.acts.values():
            hook.observing = False
    for name, hook in fq.acts.items():
        x = torch.cat(samples[name])
        if method == "percentile":
            hook.lo, hook.hi = percentile_range(x, percentile)
        else:
            lo, hi = mse_range(x.unsqueeze(0), hook.grid)
            hook.lo, hook.hi = float(lo), float(hi)
        hook.lo, hook.hi = min(hook.lo, 0.0), max(hook.hi, 0.0)
