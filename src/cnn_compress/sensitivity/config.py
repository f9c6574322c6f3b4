"""The ``sensitivity`` section: which per-layer measurements the sensitivity stage makes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from cnn_compress.core.config import require


@dataclass(frozen=True)
class SensitivityConfig:
    """Each conv / linear layer is pruned alone at every ratio and quantized alone at every bit
    width, the rest of the model left as trained. Empty grids (the default) switch the stage off:
    it then writes an empty table in a moment, so pipelines without allocations pay nothing."""

    SECTION: ClassVar[str] = "sensitivity"
    ratios: tuple[float, ...] = ()  # L1 unstructured ratios, each layer alone, e.g. [0.5, 0.8, 0.9, 0.95]
    bits: tuple[int, ...] = ()  # fixed-point widths, each layer's weights alone, e.g. [2, 3, 4, 5, 6]
    scheme: Literal["symmetric", "asymmetric"] = "asymmetric"
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    weight_range: Literal["minmax", "mse"] = "minmax"
    split: Literal["val", "train", "test"] = "val"  # never the test split by default: allocations are choices
    images: int = 2000  # class-balanced images of the split scored per measurement (0 = the whole split)
    batch_size: int = 500
    threads: int = 2

    def __post_init__(self) -> None:
        for r in self.ratios:
            require(0 < r < 1, "sensitivity.ratios", f"each ratio must be in (0, 1), got {r}")
        for b in self.bits:
            require(2 <= b <= 8, "sensitivity.bits", f"each width must be in [2, 8], got {b}")
        require(len(set(self.ratios)) == len(self.ratios), "sensitivity.ratios", "has duplicates")
        require(len(set(self.bits)) == len(self.bits), "sensitivity.bits", "has duplicates")
        require(self.images >= 0, "sensitivity.images", f"must be >= 0, got {self.images}")
        require(self.batch_size >= 1, "sensitivity.batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.threads >= 1, "sensitivity.threads", f"must be >= 1, got {self.threads}")

    @property
    def enabled(self) -> bool:
        return bool(self.ratios or self.bits)
