"""Model registry: ``@register_model`` builders keyed by ``model.arch``.

The CIFAR ResNets follow He et al. (2016) with "option A" shortcuts (stride-2 subsampling and
zero-padded channels, no 1x1 conv) and the akamaster parameter names, so published checkpoints
load key for key. ResNet-18, MobileNetV2 and VGG16-BN come in a CIFAR variant (3x3 / stride-1
stem for 32x32 inputs) and the torchvision (ImageNet) variant, whose parameter names match
torchvision's so its published state_dicts load as ``model.pretrained``.

Each entry records its classifier (``head``) for ``model.reset_head`` and whether it takes a
``width``; builders take ``num_classes`` plus the options their metadata declares.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnn_compress.core.errors import ConfigError
from cnn_compress.core.registry import Registry
from cnn_compress.models import user

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model.arch", "architecture")


def register_model(name: str, head: str, options: tuple[str, ...] = ()) -> Callable[[ModelBuilder], ModelBuilder]:
    """``head``: the classifier's module name; ``options``: extra builder args (width, input_size)."""
    return MODELS.register(name, head=head, options=options)


def model_names() -> list[str]:
    return MODELS.names()


def head_name(arch: str) -> str:
    return MODELS.meta(arch)["head"]


def head_names(arch: str, model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> tuple[str, ...]:
    """The classifier layers: the zoo's registered head, or for your own model (an import path) every
    conv / linear layer that emits ``num_classes`` channels (a two-branch head has two)."""
    if not user.is_import_path(arch):
        return (head_name(arch),)
    return user.classifier_names(model, input_shape, num_classes)


def build_model(arch: str, **args: Any) -> nn.Module:
    """A zoo model by name, or your own by import path (``models/user.py``)."""
    if user.is_import_path(arch):
        return user.build(arch, **args)
    builder, options = MODELS.get(arch), MODELS.meta(arch)["options"]
    for key in args:
        if key != "num_classes" and key not in options:
            supported = f"it takes {', '.join(options)}" if options else "it has no options"
            raise ConfigError(f"model.{key}: not an option of {arch} ({supported}); leave it 0")
    return builder(**args)


class PadShortcut(nn.Module):
    """Option A shortcut: subsample spatially and zero-pad the new channels (no parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        lo = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, lo, self.extra - lo))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: three stages of n blocks at width w, 2w, 4w."""

    def __init__(self, depth: int, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ConfigError(f"model.arch: CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        planes = [width, 2 * width, 4 * width]
        self.in_planes = width
        self.layer1 = self._stage(planes[0], n, 1)
        self.layer2 = self._stage(planes[1], n, 2)
        self.layer3 = self._stage(planes[2], n, 2)
        self.linear = nn.Linear(planes[2], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _register_cifar_resnet(depth: int) -> None:
    @register_model(f"resnet{depth}", head="linear", options=("width",))
    def build(num_classes: int = 10, width: int = 16) -> nn.Module:
        return CifarResNet(depth, num_classes, width)


for _depth in (8, 20, 32, 44, 56, 110):
    _register_cifar_resnet(_depth)


def _tv() -> Any:
    """torchvision (3 s to import) only when one of its architectures is built."""
    from cnn_compress.models import tv_zoo

    return tv_zoo


@register_model("resnet18", head="fc")
def resnet18(num_classes: int = 10) -> nn.Module:
    """ResNet-18 with a CIFAR stem: 11.17M parameters for 10 classes."""
    return _tv().TorchvisionResNet([2, 2, 2, 2], num_classes, cifar_stem=True)


@register_model("resnet18_imagenet", head="fc", options=("input_size",))
def resnet18_imagenet(num_classes: int = 1000, input_size: int = 0) -> nn.Module:
    """torchvision's ResNet-18; ``input_size`` (e.g. 224) resizes inputs for transfer learning."""
    return _tv().TorchvisionResNet([2, 2, 2, 2], num_classes, cifar_stem=False, input_size=input_size)


@register_model("mobilenet_v2", head="classifier.1")
def mobilenet_v2(num_classes: int = 10) -> nn.Module:
    return _tv().MobileNetV2(num_classes, cifar=True)


@register_model("mobilenet_v2_imagenet", head="classifier.1", options=("input_size",))
def mobilenet_v2_imagenet(num_classes: int = 1000, input_size: int = 0) -> nn.Module:
    return _tv().MobileNetV2(num_classes, cifar=False, input_size=input_size)


@register_model("vgg16_bn", head="classifier")
def vgg16_bn(num_classes: int = 10) -> nn.Module:
    return _tv().VGGCifar(num_classes)


@register_model("vgg16_bn_imagenet", head="classifier.6", options=("input_size",))
def vgg16_bn_imagenet(num_classes: int = 1000, input_size: int = 0) -> nn.Module:
    return _tv().VGGImageNet(num_classes, input_size)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, nonzero parameters)."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p))
    return total, nonzero


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (conv and linear layers, dense)."""
    macs = 0

    def conv_hook(m: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal macs
        k = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
        macs += out.numel() // out.shape[0] * k

    def linear_hook(m: nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() // out.shape[0] * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    param = next(model.parameters())
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape, dtype=param.dtype, device=param.device))
    finally:
        for h in handles:
            h.remove()
    return macs
