"""The ``model`` section: architecture, width, pretrained weights."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from cnn_compress.core.config import require
from cnn_compress.core.errors import ConfigError


def _plain(value: Any, key: str) -> Any:
    """YAML data only (numbers, strings, booleans, lists, mappings): what a checkpoint can carry."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    require(value is None or isinstance(value, (bool, int, float, str)), key, f"must be plain YAML data, got {value!r}")
    return value


def _args(value: Any, key: str) -> dict[str, Any]:
    require(isinstance(value, dict), key, f"must be a mapping of keyword arguments, got {value!r}")
    for name in value:
        require(isinstance(name, str) and name.isidentifier(), f"{key}.{name}", "must be a Python identifier")
        require(name != "num_classes", f"{key}.{name}", "is set from the data's class count; leave it out")
    return _plain(value, key)


@dataclass(frozen=True)
class ModelConfig:
    SECTION: ClassVar[str] = "model"
    COERCE: ClassVar[dict[str, Any]] = {"args": _args}
    # a zoo name, "package.module:callable" (your own model, found from the pipeline's folder, the
    # repository root or PYTHONPATH) or "torchvision:<name>" (any torchvision classification model)
    arch: str = "resnet20"  # the small CIFAR ResNet (0.27M params): trains in about a minute on 2 cores
    args: dict[str, Any] = field(default_factory=dict)  # import-path archs: keyword arguments besides num_classes
    width: int = 0  # CIFAR ResNets only: channels of the first stage (0 = the published 16)
    input_size: int = 0  # *_imagenet models: resize inputs to this (e.g. 224) for transfer; 0 = off
    pretrained: str = ""  # path: this tool's checkpoint, a state_dict or {"state_dict": ...} file
    reset_head: bool = False  # re-initialise the classifier after loading pretrained (new class count)
    freeze: tuple[str, ...] = ()  # module-name prefixes whose parameters the train stage leaves fixed

    def __post_init__(self) -> None:
        require(self.width >= 0, "model.width", f"must be >= 0, got {self.width}")
        require(self.input_size >= 0, "model.input_size", f"must be >= 0, got {self.input_size}")
        require(not self.reset_head or bool(self.pretrained), "model.reset_head", "needs model.pretrained")
        if self.args and ":" not in self.arch:
            raise ConfigError(f"model.args: only for an import-path model.arch (\"package.module:callable\"); "
                              f"{self.arch} takes model.width / model.input_size")
        if ":" in self.arch and (self.width or self.input_size):
            key = "model.width" if self.width else "model.input_size"
            raise ConfigError(f"{key}: not an option of {self.arch}; put its arguments in model.args (leave it 0)")

    def arch_args(self, num_classes: int) -> dict[str, Any]:
        """Builder arguments: only the options that are set, so each arch sees what it takes."""
        args: dict[str, Any] = {"num_classes": num_classes} | dict(self.args)
        args |= {"width": self.width} if self.width else {}
        return args | ({"input_size": self.input_size} if self.input_size else {})
