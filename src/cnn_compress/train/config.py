"""The ``train`` and ``finetune`` sections: one training recipe, two defaults."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from cnn_compress.core.config import require


def _amp(value: object, key: str) -> str:
    """YAML 1.1 reads a bare ``off`` as false: take it as "off", as the user meant."""
    value = "off" if value is False else value
    require(value in ("off", "bf16", "fp16"), key, f"must be one of off, bf16, fp16, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class TrainConfig:
    SECTION: ClassVar[str] = "train"
    COERCE: ClassVar[dict] = {"amp": _amp}
    epochs: int = 15  # enough for > 95% on digits; CIFAR wants ~200
    steps_per_epoch: int = 0  # 0 = the whole training split; else an epoch is this many batches (short CPU schedules)
    batch_size: int = 64
    lr: float = 0.1  # peak learning rate of the cosine schedule
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # the CIFAR ResNet recipe
    label_smoothing: float = 0.0
    crop_pad: int = 2  # random-crop padding in pixels (0 = off); CIFAR uses 4
    flip: bool = False  # horizontal flips: off for digits (a flipped 2 is not a 2), on for CIFAR
    cutout: int = 0  # side of a random square zeroed per image (0 = off; 8 or 16 on CIFAR)
    seed: int = 0  # fixes init, shuffling and augmentation: CPU runs are bit-for-bit reproducible
    threads: int = 2  # torch intra-op threads; fixed so results do not depend on the machine's cores
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = CUDA when present
    amp: Literal["off", "bf16", "fp16"] = "off"  # autocast; fp16 (CUDA only) with a gradient scaler

    def __post_init__(self) -> None:
        sec = self.SECTION
        require(self.epochs >= 0, f"{sec}.epochs", f"must be >= 0, got {self.epochs}")
        require(self.batch_size >= 1, f"{sec}.batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.steps_per_epoch >= 0, f"{sec}.steps_per_epoch", f"must be >= 0, got {self.steps_per_epoch}")
        require(self.lr > 0, f"{sec}.lr", f"must be > 0, got {self.lr}")
        require(0 <= self.momentum < 1, f"{sec}.momentum", f"must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, f"{sec}.weight_decay", "must be >= 0")
        require(0 <= self.label_smoothing < 1, f"{sec}.label_smoothing", "must be in [0, 1)")
        require(self.crop_pad >= 0, f"{sec}.crop_pad", "must be >= 0")
        require(self.cutout >= 0, f"{sec}.cutout", "must be >= 0")
        require(self.threads >= 1, f"{sec}.threads", f"must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class RatioRow:
    """One row of ``finetune.by_ratio``: settings for models pruned at most ``upto``."""

    SECTION: ClassVar[str] = "finetune.by_ratio[]"
    upto: float = 1.0
    epochs: int = 5
    lr: float = 0.01


@dataclass(frozen=True)
class DistillConfig:
    """``finetune.distill``: learn from a teacher's softened outputs as well as from the labels
    (Hinton et al.): loss = (1 - weight) * CE + weight * T^2 * KL(teacher_T || student_T)."""

    SECTION: ClassVar[str] = "finetune.distill"
    weight: float = 0.0  # 0 = off
    temperature: float = 4.0
    teacher: str = "baseline"  # the unpruned trained model (models/baseline.pt) or a checkpoint path

    def __post_init__(self) -> None:
        require(0 <= self.weight <= 1, f"{self.SECTION}.weight", f"must be in [0, 1], got {self.weight}")
        require(self.temperature > 0, f"{self.SECTION}.temperature", f"must be > 0, got {self.temperature}")
        require(bool(self.teacher), f"{self.SECTION}.teacher", "must be 'baseline' or a checkpoint path")


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    SECTION: ClassVar[str] = "finetune"
    epochs: int = 5  # recovers most of the accuracy lost to 50% sparsity on digits
    lr: float = 0.01  # a tenth of training's: the weights are already good
    by_ratio: tuple[RatioRow, ...] = ()  # harder pruning, longer fine-tuning: first row with ratio <= upto wins
    distill: DistillConfig = DistillConfig()  # knowledge distillation (off by default); also QAT / fixed<N> epochs

    def __post_init__(self) -> None:
        super().__post_init__()
        uptos = [r.upto for r in self.by_ratio]
        require(uptos == sorted(uptos), "finetune.by_ratio", "rows must be sorted by upto")
        for i, row in enumerate(self.by_ratio):
            require(0 <= row.upto <= 1, f"finetune.by_ratio[{i}].upto", f"must be in [0, 1], got {row.upto}")
            require(row.epochs >= 0, f"finetune.by_ratio[{i}].epochs", "must be >= 0")
            require(row.lr > 0, f"finetune.by_ratio[{i}].lr", "must be > 0")

    def for_ratio(self, ratio: float) -> FinetuneConfig:
        """These settings with epochs and lr from the first ``by_ratio`` row covering ``ratio``."""
        row = next((r for r in self.by_ratio if ratio <= r.upto), None)
        return self if row is None else dataclasses.replace(self, epochs=row.epochs, lr=row.lr)
