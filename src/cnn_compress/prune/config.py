"""The ``prune`` section: what is removed, how and when."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from cnn_compress.core.config import require

# quantization format types whose own weights can be pruned after quantization: plain tensors, or
# PT2E programs holding INT8 codes (checked when a variant is resolved, applied in after_quantize.py)
PRUNABLE_AFTER_QUANTIZE = ("fp32", "fp16", "int8_static", "int8_qat", "fixed")


@dataclass(frozen=True)
class PruneConfig:
    """With ``order: after_quantize`` the prune stage passes the model through and the quantize
    stage prunes each artifact's own weights (``prune/after_quantize.py``)."""

    SECTION: ClassVar[str] = "prune"
    method: str = "l1_unstructured"  # key into the pruning registry: l1_unstructured | structured | blocks
    scope: Literal["global", "layer"] = "global"  # one threshold for all layers, or the ratio in every layer
    ratio: float = 0.5  # unstructured: fraction of conv + linear weights zeroed; structured: of channels;
    # blocks: of the residual blocks whose shortcut is the identity (removed whole: depth pruning)
    importance: Literal["l1", "l2", "taylor", "bn_scale"] = "l1"  # structured: how channel groups are ranked
    round_to: int = 1  # structured: keep channel counts multiples of this (8 suits SIMD / tensor cores)
    max_layer_ratio: float = 0.9  # structured + global: never remove more than this from one layer
    ignore: tuple[str, ...] = ()  # module names left unpruned (the classifier always is)
    schedule: Literal["oneshot", "iterative"] = "oneshot"  # iterative: reach ratio in `steps` equal steps
    steps: int = 1  # iterative: pruning steps (ratio * k / steps after step k)
    step_epochs: int = 0  # iterative: training epochs after each step (finetune.* hyperparameters)
    order: Literal["before_quantize", "after_quantize"] = "before_quantize"  # after: prune each quantized artifact
    # l1_unstructured: uniform (scope decides) or sensitivity (per-layer ratios meeting `ratio` overall,
    # the least sensitive layers pruned most; needs the sensitivity stage, resolved into layer_ratios)
    allocation: Literal["uniform", "sensitivity"] = "uniform"
    layer_ratios: dict[str, float] = field(default_factory=dict)  # layer name -> its own ratio (overrides scope)
    # a second pass on what this one leaves (its own method, ratio, schedule), e.g. blocks then structured:
    # fewer layers for batch 1, thinner ones for batch 64; passes chain (then.then ...)
    then: PruneConfig | None = None

    def __post_init__(self) -> None:
        require(0 <= self.ratio < 1, "prune.ratio", f"must be in [0, 1), got {self.ratio}")
        require(self.round_to >= 1, "prune.round_to", f"must be >= 1, got {self.round_to}")
        require(0 < self.max_layer_ratio < 1, "prune.max_layer_ratio", "must be in (0, 1)")
        require(self.steps >= 1, "prune.steps", f"must be >= 1, got {self.steps}")
        require(self.step_epochs >= 0, "prune.step_epochs", "must be >= 0")
        require(self.schedule == "iterative" or self.steps == 1, "prune.steps",
                 "needs prune.schedule: iterative when > 1")
        require(self.order == "before_quantize" or (self.method == "l1_unstructured" and self.schedule == "oneshot"),
                 "prune.order", "after_quantize prunes quantized weights one-shot: needs method l1_unstructured, "
                 "schedule oneshot")
        for name, r in self.layer_ratios.items():
            require(0 <= r < 1, f"prune.layer_ratios.{name}", f"must be in [0, 1), got {r}")
        require(self.method == "l1_unstructured" or (self.allocation == "uniform" and not self.layer_ratios),
                "prune.allocation", "per-layer ratios (allocation: sensitivity, layer_ratios) need method l1_unstructured")
        require(self.order == "before_quantize" or (self.allocation == "uniform" and not self.layer_ratios),
                "prune.allocation", "per-layer ratios need order: before_quantize")
        if self.then is not None:
            require(self.order == "before_quantize" and self.then.order == "before_quantize", "prune.then",
                    "chained passes prune before quantization (order: before_quantize in both)")
            require(self.then.allocation == "uniform" and not self.then.layer_ratios, "prune.then.allocation",
                    "per-layer ratios are resolved for the first pass only")

    def passes(self) -> list[PruneConfig]:
        """This pass and every chained one, in the order they run."""
        return [self, *(self.then.passes() if self.then else [])]

    def label(self) -> str:
        """The method, with each chained pass's method and ratio: ``blocks+structured 0.3``."""
        return "+".join([self.method] + [f"{p.method} {p.ratio:g}" for p in self.passes()[1:]])
