"""Self-describing checkpoints: one ``load_checkpoint(path)`` serves every stage.

A checkpoint carries the architecture and its arguments, the shape of every tensor and the
residual blocks removed (so channel- and depth-pruned networks are rebuilt without the pruner),
class names, input normalisation, the dtype, and the resolved config of each stage that produced
it. It holds only tensors and plain data, so it loads with ``weights_only=True``. Nothing
time-dependent is stored: the same weights give the same bytes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnn_compress.core import atomic
from cnn_compress.core.errors import CheckpointError
from cnn_compress.models.blocks import remove_blocks, removed_blocks
from cnn_compress.models.zoo import build_model

FORMAT = "cnn-compress/checkpoint/1"
_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# Loaders of what a checkpoint carries beyond weights, registered by the package that makes it
# (``quantize/fakequant.py`` registers "fake_quant"), so this module imports nothing above it and
# an edit to fixed-point code never re-runs a stage that only trains.
ATTACHERS: dict[str, Callable[[nn.Module, Any], None]] = {}


def register_attacher(key: str) -> Callable[[Callable[[nn.Module, Any], None]], Callable[[nn.Module, Any], None]]:
    def deco(func: Callable[[nn.Module, Any], None]) -> Callable[[nn.Module, Any], None]:
        ATTACHERS[key] = func
        return func

    return deco


@dataclass
class Checkpoint:
    model: nn.Module
    arch: str
    arch_args: dict[str, Any]
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_shape: tuple[int, ...]
    dtype: str = "float32"
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per stage: name + config
    fake_quant: dict[str, dict[str, Any]] = field(default_factory=dict)  # fixed<N>: activation grids per layer

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def derive(self, model: nn.Module, stage: str, config: dict[str, Any], dtype: str | None = None,
               fake_quant: dict[str, dict[str, Any]] | None = None) -> Checkpoint:
        """A checkpoint for ``model`` that remembers this one's lineage plus ``stage``."""
        return Checkpoint(
            model, self.arch, dict(self.arch_args), list(self.class_names), self.mean, self.std,
            self.input_shape, dtype or self.dtype, [*self.history, {"stage": stage, "config": config}],
            fake_quant or {},
        )


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in ckpt.model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "arch": ckpt.arch,
        "arch_args": ckpt.arch_args,
        "class_names": ckpt.class_names,
        "mean": list(ckpt.mean),
        "std": list(ckpt.std),
        "input_shape": list(ckpt.input_shape),
        "dtype": ckpt.dtype,
        "history": ckpt.history,
        "fake_quant": ckpt.fake_quant,
        "shapes": {k: list(v.shape) for k, v in state.items()},
        "state_dict": state,
    }
    if removed := removed_blocks(ckpt.model):  # depth pruning; absent otherwise (older files stay byte-equal)
        payload["removed_blocks"] = removed
    atomic.write_torch(path, payload)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> Checkpoint:
    """Rebuild the model a checkpoint describes and load its weights (strict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # damaged zip, truncated pickle, not a torch file at all
        raise CheckpointError(f"{path}: corrupt or not a torch checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cnn-compress checkpoint (no '{FORMAT}' header)")
    model = build_model(payload["arch"], **payload["arch_args"])
    try:
        remove_blocks(model, list(payload.get("removed_blocks", [])))
    except KeyError as exc:
        raise CheckpointError(f"{path}: lists a removed block {exc} that {payload['arch']} does not have") from None
    state = payload["state_dict"]
    resize_to_state(model, state)
    dtype = payload.get("dtype", "float32")
    model.to(_DTYPES[dtype])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit {payload['arch']}: {' '.join(first[1:3])}") from None
    model.eval()
    fake_quant = payload.get("fake_quant") or {}
    if fake_quant:
        if "fake_quant" not in ATTACHERS:
            raise CheckpointError(f"{path}: holds fixed-point grids; import cnn_compress.quantize.fakequant to load it")
        ATTACHERS["fake_quant"](model, fake_quant)
    return Checkpoint(
        model, payload["arch"], dict(payload["arch_args"]), list(payload["class_names"]),
        tuple(payload["mean"]), tuple(payload["std"]), tuple(payload["input_shape"]), dtype,
        list(payload.get("history", [])), fake_quant,
    )


def resize_to_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Shrink conv / BN / linear layers whose saved tensors are smaller (channel-pruned models)."""
    for name, module in model.named_modules():
        w = state.get(f"{name}.weight" if name else "weight")
        if w is None or not hasattr(module, "weight") or module.weight is None:
            continue
        if tuple(module.weight.shape) == tuple(w.shape):
            continue
        if isinstance(module, nn.Conv2d):
            if module.groups > 1 and module.groups == module.out_channels == module.in_channels:
                module.groups = w.shape[0]  # depthwise stays depthwise (MobileNetV2 after channel pruning)
            module.out_channels, module.in_channels = w.shape[0], w.shape[1] * module.groups
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = w.shape
        elif isinstance(module, nn.BatchNorm2d):
            module.num_features = w.shape[0]
        else:
            continue
        for pname, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            saved = state.get(f"{name}.{pname}")
            if saved is not None and tensor is not None and tensor.shape != saved.shape:
                new = torch.empty_like(saved, dtype=tensor.dtype)
                if isinstance(tensor, nn.Parameter):
                    setattr(module, pname, nn.Parameter(new, requires_grad=tensor.requires_grad))
                else:
                    module.register_buffer(pname, new)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from this tool's checkpoint, a plain state_dict or ``{"state_dict": ...}``.

    ``module.`` prefixes (DataParallel / DDP saves) are stripped. Loading uses
    ``weights_only=True``: a file that needs arbitrary code to unpickle is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained weights not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt or not a torch weights file ({type(exc).__name__})") from None
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path}: no state_dict of tensors inside")
    return {k.removeprefix("module."): v for k, v in payload.items()}


def _listing(keys: list[str], limit: int = 4) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_pretrained(model: nn.Module, path: str | Path, head: str, reset_head: bool) -> list[str]:
    """Load weights strictly; with ``reset_head`` the classifier ``head`` keeps its fresh init.

    Returns the keys left at their initial values (the head's when reset). Any missing,
    unexpected or misshapen key is one error that lists them.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    head_keys = sorted(k for k in own if k.startswith(f"{head}."))
    if reset_head:
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    missing = sorted(k for k in set(own) - set(state) - (set(head_keys) if reset_head else set())
                     if not k.endswith("num_batches_tracked"))  # older PyTorch did not save it
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                   for k in set(own) & set(state) if state[k].shape != own[k].shape)
    problems = [f"{label}: {_listing(keys)}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("shape (file vs model)", wrong)) if keys]
    if problems:
        hint = ""
        if any(w.startswith(f"{head}.") for w in wrong):
            hint = "; set model.reset_head: true to re-initialise the classifier"
        raise CheckpointError(f"{path}: weights do not fit this model: {'; '.join(problems)}{hint}")
    model.load_state_dict(state, strict=False)
    return head_keys if reset_head else []
