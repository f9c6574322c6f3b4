"""SEGroupNet: a small CNN of another shape than the zoo's, compressed by `model.arch: "sednet:build"`.

Grouped 3x3 convolutions, a squeeze-excitation gate in every residual block and a two-branch head
(average-pooled and max-pooled features, each with its own classifier, logits summed). The blocks
set ``residual_identity = True``: their output is ``relu(x + branch(x))`` with ``x`` the output of a
ReLU, so without its branch a block is exactly the identity and depth pruning (``prune.method:
blocks``) may remove it. Editing this file re-runs ``train`` (place.yaml's ``model_code``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SqueezeExcite(nn.Module):
    """Channel gates from the globally pooled features (Hu et al., 2018)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * gate


class GroupedSEBlock(nn.Module):
    """Grouped 3x3 conv, 1x1 conv, squeeze-excitation, identity shortcut."""

    residual_identity = True  # the declared pattern depth pruning looks for (docs/own-model.md)

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.se = SqueezeExcite(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(x + out)


class TwoBranchHead(nn.Module):
    """Average- and max-pooled features, one linear classifier each; the logits are summed."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.avg_fc = nn.Linear(channels, num_classes)
        self.max_fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.avg_fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return avg + self.max_fc(F.adaptive_max_pool2d(x, 1).flatten(1))


class SEGroupNet(nn.Module):
    def __init__(self, num_classes: int, width: int = 16, groups: int = 4, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stage1 = nn.Sequential(*(GroupedSEBlock(width, groups) for _ in range(blocks)))
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(2 * width), nn.ReLU())
        self.stage2 = nn.Sequential(*(GroupedSEBlock(2 * width, groups) for _ in range(blocks)))
        self.head = TwoBranchHead(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))))


def build(num_classes: int, width: int = 16, groups: int = 4, blocks: int = 2) -> nn.Module:
    """What ``model.arch: "sednet:build"`` calls, with ``model.args`` as keyword arguments."""
    return SEGroupNet(num_classes, width, groups, blocks)
