"""The ``model`` section: architecture, width, pretrained weights."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cnn_compress.core.config import require


@dataclass(frozen=True)
class ModelConfig:
    SECTION: ClassVar[str] = "model"
    arch: str = "resnet20"  # the small CIFAR ResNet (0.27M params): trains in about a minute on 2 cores
    width: int = 0  # CIFAR ResNets only: channels of the first stage (0 = the published 16)
    input_size: int = 0  # *_imagenet models: resize inputs to this (e.g. 224) for transfer; 0 = off
    pretrained: str = ""  # path: this tool's checkpoint, a state_dict or {"state_dict": ...} file
    reset_head: bool = False  # re-initialise the classifier after loading pretrained (new class count)
    freeze: tuple[str, ...] = ()  # module-name prefixes whose parameters the train stage leaves fixed

    def __post_init__(self) -> None:
        require(self.width >= 0, "model.width", f"must be >= 0, got {self.width}")
        require(self.input_size >= 0, "model.input_size", f"must be >= 0, got {self.input_size}")
        require(not self.reset_head or bool(self.pretrained), "model.reset_head", "needs model.pretrained")

    def arch_args(self, num_classes: int) -> dict[str, Any]:
        """Builder arguments: only the options that are set, so each arch sees what it takes."""
        args: dict[str, Any] = {"num_classes": num_classes}
        args |= {"width": self.width} if self.width else {}
        return args | ({"input_size": self.input_size} if self.input_size else {})
