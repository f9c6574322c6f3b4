"""The torchvision-based architectures (ResNet-18, MobileNetV2, VGG16-BN), CIFAR and ImageNet forms.

A module of its own because importing torchvision costs about 3 s (its ops import torch._dynamo):
every stage process would pay it, though only these architectures need it. ``zoo`` registers them
and imports this module when one is built.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers as vgg_layers


class ResizeInput(nn.Module):
    """Bilinear resize of the input batch: feeds 32x32 images to an ImageNet-sized network."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.size or x.shape[-1] == self.size and x.shape[-2] == self.size:
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


class UnsharedReluBlock(tvm.resnet.BasicBlock):
    """torchvision's BasicBlock calling ReLU functionally: its one ``relu`` module is applied twice,
    which gives the PT2E x86 quantizer a partition with two outputs, and it refuses the model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class TorchvisionResNet(tvm.ResNet):
    """torchvision's ResNet (same parameter names) with an optional input resize in front."""

    def __init__(self, layers: list[int], num_classes: int, cifar_stem: bool, input_size: int = 0) -> None:
        super().__init__(UnsharedReluBlock, layers, num_classes=num_classes)
        if cifar_stem:  # 3x3 stride-1 conv, no max-pool: keeps 32x32 resolution into layer1
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()
        self.resize = ResizeInput(input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(self.resize(x))))  # functional ReLU, as in the blocks
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.maxpool(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class MobileNetV2(tvm.MobileNetV2):
    def __init__(self, num_classes: int, cifar: bool, input_size: int = 0) -> None:
        super().__init__(num_classes=num_classes)
        if cifar:  # stride-1 stem and first 24-channel block: 32x32 inputs end at 4x4, not 1x1
            self.features[0][0].stride = (1, 1)
            self.features[2].conv[1][0].stride = (1, 1)
        self.resize = ResizeInput(input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.resize(x))


class VGGCifar(nn.Module):
    """VGG16-BN features (torchvision names) and one linear classifier on the 1x1x512 output."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = vgg_layers(vgg_cfgs["D"], batch_norm=True)
        self.classifier = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class VGGImageNet(tvm.VGG):
    def __init__(self, num_classes: int, input_size: int = 0) -> None:
        super().__init__(vgg_layers(vgg_cfgs["D"], batch_norm=True), num_classes=num_classes)
        self.resize = ResizeInput(input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.resize(x))
