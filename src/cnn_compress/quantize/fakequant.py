"""N-bit fixed-point quantization, simulated in float ("fake quantization").

Weights are rounded onto a grid of at most 2^N levels (per tensor or per output channel) and
stored as the resulting float values, so a ``fixed<N>`` checkpoint is an ordinary checkpoint whose
tensors take at most 2^N distinct values (per channel). Activations entering every quantized layer
are rounded onto a per-tensor grid whose range was calibrated once; those grids travel with the
checkpoint (``Checkpoint.fake_quant``) and are re-attached as forward pre-hooks on load.

Symmetric grids are signed with zero-point 0 and use the restricted range ±(2^(N-1) - 1), so
zero and its negation are exact; asymmetric grids cover [min, max] (widened to include 0) with
an integer zero-point. Rounding passes gradients straight through (STE), so a model can be
fine-tuned with the quantizers in place.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from cnn_compress.core.names import select_names
from cnn_compress.models.checkpoint import register_attacher

QUANTIZABLE = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class Grid:
    bits: int
    symmetric: bool

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1

    def qparams(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero_point) covering [lo, hi] elementwise; the range always includes 0."""
        lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
        if self.symmetric:
            scale = torch.maximum(-lo, hi) / self.qmax
            zero = torch.zeros_like(scale)
        else:
            scale = (hi - lo) / (self.qmax - self.qmin)
            zero = torch.round(-lo / torch.clamp(scale, min=1e-12))
        return torch.clamp(scale, min=1e-12), zero


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Round ``x`` onto the grid; the gradient passes straight through (STE)."""
    q = torch.clamp(torch.round(x / scale) + zero, grid.qmin, grid.qmax)
    return x + ((q - zero) * scale - x).detach()


class WeightQuantizer(nn.Module):
    """A parametrization: the layer sees its weight on the grid, training updates the float copy."""

    def __init__(self, grid: Grid, per_channel: bool) -> None:
        super().__init__()
        self.grid, self.per_channel = grid, per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            flat = w.detach().reshape(w.shape[0], -1)
            shape = (-1,) + (1,) * (w.dim() - 1)
            scale, zero = self.grid.qparams(flat.min(1).values.reshape(shape), flat.max(1).values.reshape(shape))
        else:
            scale, zero = self.grid.qparams(w.detach().min(), w.detach().max())
        return fake_quantize(w, scale, zero, self.grid)


class ActivationQuantizer:
    """Forward pre-hook rounding a layer's input onto a calibrated per-tensor grid."""

    def __init__(self, grid: Grid, lo: float = 0.0, hi: float = 0.0) -> None:
        self.grid, self.lo, self.hi = grid, lo, hi
        self.observing = False

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        if self.observing:
            self.lo, self.hi = min(self.lo, x.min().item()), max(self.hi, x.max().item())
            return args
        scale, zero = self.grid.qparams(torch.tensor(self.lo), torch.tensor(self.hi))
        return (fake_quantize(x, scale.to(x), zero.to(x), self.grid), *args[1:])

    def spec(self) -> dict[str, Any]:
        return {"bits": self.grid.bits, "symmetric": self.grid.symmetric, "lo": self.lo, "hi": self.hi}


def select_layers(model: nn.Module, include: tuple[str, ...], exclude: tuple[str, ...]) -> list[str]:
    """Conv and linear layers under any ``include`` prefix (all when empty), minus ``exclude``."""
    return select_names([n for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)], include, exclude)


class FixedPointModel:
    """Puts weight and activation quantizers on the chosen layers of ``model`` (in place);
    ``layer_bits`` gives some layers their own width (mixed precision), weights and inputs alike."""

    def __init__(self, model: nn.Module, layers: list[str], bits: int, symmetric: bool, per_channel: bool,
                 act_bits: int, layer_bits: dict[str, int] | None = None) -> None:
        self.model, self.layers = model, layers
        self.bits = {name: (layer_bits or {}).get(name, bits) for name in layers}
        modules = dict(model.named_modules())
        self.acts: dict[str, ActivationQuantizer] = {}
        for name in layers:
            grid = Grid(self.bits[name], symmetric)
            parametrize.register_parametrization(modules[name], "weight", WeightQuantizer(grid, per_channel))
            if act_bits:
                self.acts[name] = hook = ActivationQuantizer(grid if layer_bits else Grid(act_bits, symmetric))
                modules[name].register_forward_pre_hook(hook)

    @torch.no_grad()
    def calibrate(self, batches: Iterator[torch.Tensor]) -> None:
        """Record each quantized layer's input range (min/max over the calibration images)."""
        self.model.eval()
        for hook in self.acts.values():
            hook.observing, hook.lo, hook.hi = True, 0.0, 0.0
        for x in batches:
            self.model(x)
        for hook in self.acts.values():
            hook.observing = False

    def bake(self) -> dict[str, dict[str, Any]]:
        """Replace every weight by its grid values; return the activation grids to store."""
        modules = dict(self.model.named_modules())
        for name in self.layers:
            parametrize.remove_parametrizations(modules[name], "weight", leave_parametrized=True)
        return {name: hook.spec() for name, hook in self.acts.items()}


@register_attacher("fake_quant")
def attach(model: nn.Module, spec: dict[str, dict[str, Any]]) -> None:
    """Re-attach the stored activation grids of a ``fixed<N>`` checkpoint."""
    modules = dict(model.named_modules())
    for name, s in spec.items():
        modules[name].register_forward_pre_hook(ActivationQuantizer(Grid(s["bits"], s["symmetric"]), s["lo"], s["hi"]))
