"""Residual blocks that depth pruning may remove, and the marker a removed one leaves behind.

Your own model's blocks are removable when their class declares it: ``residual_identity = True``
(a class attribute) says the block computes ``x + branch(x)`` (or ``relu(x + branch(x))`` on an ``x``
that is already a ReLU's output), so that without its branch it is exactly the identity.

A block is removable when its output has its input's shape and its input passes through
unchanged beside the residual branch (no downsampling shortcut): then the block without its
branch is the identity, exactly (the CIFAR and torchvision ResNet blocks end in a ReLU, but
their input already comes out of one). A removed block becomes a :class:`RemovedBlock`, which
the checkpoint lists by name so the smaller network is rebuilt at load time.
"""
from __future__ import annotations

from torch import nn


class RemovedBlock(nn.Identity):
    """A residual block removed by depth pruning: its input passes through."""


def is_removable(module: nn.Module) -> bool:
    """A residual block whose shortcut is the identity (CIFAR ResNet, torchvision ResNet, MobileNetV2,
    or any block that declares ``residual_identity = True``)."""
    if getattr(module, "residual_identity", False) is True:  # your own model's declared pattern
        return True
    if getattr(module, "use_res_connect", False):  # MobileNetV2's InvertedResidual, stride 1, same width
        return True
    if not any(c.__name__ in ("BasicBlock", "Bottleneck") for c in type(module).__mro__):  # ours, torchvision's
        return False
    return getattr(module, "downsample", None) is None and isinstance(getattr(module, "shortcut", nn.Identity()),
                                                                        nn.Identity)


def removable_blocks(model: nn.Module) -> list[str]:
    """Names of the blocks depth pruning may remove, in network order."""
    return [name for name, m in model.named_modules() if name and is_removable(m)]


def removed_blocks(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, RemovedBlock)]


def set_module(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at dotted ``name``; returns the one it replaces (KeyError: no such module)."""
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name) if parent_name else model
    except AttributeError:
        raise KeyError(name) from None
    if child not in parent._modules:
        raise KeyError(name)
    old = parent._modules[child]
    parent._modules[child] = module
    return old


def remove_blocks(model: nn.Module, names: list[str]) -> None:
    for name in names:
        set_module(model, name, RemovedBlock())
