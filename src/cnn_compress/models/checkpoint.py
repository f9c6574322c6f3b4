"""Self-describing checkpoints: one ``load_checkpoint(path)`` serves every stage.

A checkpoint carries the architecture and its arguments, the shape of every tensor and the
residual blocks removed (so channel- and depth-pruned networks are rebuilt without the pruner),
class names, input normalisation, the dtype, and the resolved config of each stage that produced
it. It holds only tensors and plain data, so it loads with ``weights_only=True``. Nothing
time-dependent is stored: the same weights give the same bytes.

Your own model (an import-path ``arch``) is rebuilt by importing it again: the checkpoint records
the import path, its arguments and the sha256 of the module's source file (``source``), and a load
warns when that file has changed since. Every checkpoint carries a sha256 ``digest`` of its own
payload (tensors and metadata, canonically encoded), checked at every load: a copy damaged in a
cache or remote that still unpickles is refused as corrupt, not used with altered weights.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnn_compress.core import atomic
from cnn_compress.core.errors import CheckpointError, ConfigError
from cnn_compress.models import user
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
    source: dict[str, str] = field(default_factory=dict)  # import-path arch: module, file, sha256 (else empty)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def derive(self, model: nn.Module, stage: str, config: dict[str, Any], dtype: str | None = None,
               fake_quant: dict[str, dict[str, Any]] | None = None) -> Checkpoint:
        """A checkpoint for ``model`` that remembers this one's lineage plus ``stage``."""
        return Checkpoint(
            model, self.arch, dict(self.arch_args), list(self.class_names), self.mean, self.std,
            self.input_shape, dtype or self.dtype, [*self.history, {"stage": stage, "config": config}],
            fake_quant or {}, dict(self.source),
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
    source = ckpt.source or _source(ckpt.arch)
    if source:  # your own model: where its code came from
        payload["source"] = source
    payload["digest"] = payload_digest(payload)
    atomic.write_torch(path, payload)


def _source(arch: str) -> dict[str, str]:
    found = user.source_of(arch)
    return found.as_dict() if found else {}


def payload_digest(payload: dict[str, Any]) -> str:
    """sha256 of everything in a checkpoint but its digest: tensors by dtype, shape and bytes, plain
    data by type and value, mappings in key order. Deterministic: same contents, same digest."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "digest"})
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)};".encode())
        for key in sorted(obj, key=str):
            _feed(h, str(key))
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)};".encode())
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"P{obj!r};".encode())


def verify_digest(path: Path, payload: dict[str, Any]) -> None:
    """A checkpoint whose contents no longer match its digest is corrupt (older files carry none)."""
    recorded = payload.get("digest")
    if recorded is None:
        return
    if not isinstance(recorded, str) or payload_digest(payload) != recorded:
        raise CheckpointError(f"{path}: corrupt: its contents do not match the sha256 digest it carries "
                              "(a damaged copy: fetch or check it out again)")


def _rebuild(path: Path, payload: dict[str, Any]) -> tuple[nn.Module, str]:
    """The model, and why its code differs from the saved one's ("" when it does not)."""
    arch, source = payload["arch"], payload.get("source") or {}
    try:
        model = build_model(arch, **payload["arch_args"])
        changed = (user.changed_source(arch, source) or "") if source else ""
    except ConfigError as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {exc}") from None
    if changed:
        print(f"warning: {path}: the model's code {changed}; its weights load only if the layers still match, "
              "and the model may compute something else", file=sys.stderr)
    return model, changed


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
    verify_digest(path, payload)
    model, changed = _rebuild(path, payload)
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
        why = f" ({changed})" if changed else ""
        raise CheckpointError(f"{path}: weights do not fit {payload['arch']}{why}: {' '.join(first[1:3])}") from None
    model.eval()
    fake_quant = payload.get("fake_quant") or {}
    if fake_quant:
        if "fake_quant" not in ATTACHERS:
            raise CheckpointError(f"{path}: holds fixed-point grids; import cnn_compress.quantize.fakequant to load it")
        ATTACHERS["fake_quant"](model, fake_quant)
    return Checkpoint(
        model, payload["arch"], dict(payload["arch_args"]), list(payload["class_names"]),
        tuple(payload["mean"]), tuple(payload["std"]), tuple(payload["input_shape"]), dtype,
        list(payload.get("history", [])), fake_quant, dict(payload.get("source") or {}),
    )


def resize_to_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Resize every parameter and buffer whose saved tensor has another shape (channel-pruned
    models), and the size attributes of the layers that hold them (conv, linear, norms, PReLU)."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        if not any((saved := state.get(prefix + p)) is not None and t is not None and t.shape != saved.shape
                   for p, t in tensors):
            continue
        w = state.get(prefix + "weight")
        if isinstance(module, nn.Conv2d) and w is not None:
            if module.groups > 1 and module.groups == module.out_channels == module.in_channels:
                module.groups = w.shape[0]  # depthwise stays depthwise (MobileNetV2 after channel pruning)
            module.out_channels, module.in_channels = w.shape[0], w.shape[1] * module.groups
        elif isinstance(module, nn.Linear) and w is not None:
            module.out_features, module.in_features = w.shape
        elif isinstance(module, nn.modules.batchnorm._NormBase) and w is not None:
            module.num_features = w.shape[0]
        elif isinstance(module, nn.GroupNorm) and w is not None:
            module.num_channels = w.shape[0]
        elif isinstance(module, nn.LayerNorm) and w is not None:
            module.normalized_shape = tuple(w.shape)
        elif isinstance(module, nn.PReLU) and w is not None:
            module.num_parameters = w.shape[0]
        for pname, tensor in tensors:
            saved = state.get(prefix + pname)
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
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        verify_digest(path, payload)
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path}: no state_dict of tensors inside")
    return {k.removeprefix("module."): v for k, v in payload.items()}


def _listing(keys: list[str], limit: int = 4) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_pretrained(model: nn.Module, path: str | Path, head: str | tuple[str, ...], reset_head: bool) -> list[str]:
    """Load weights strictly; with ``reset_head`` the classifier ``head`` keeps its fresh init.

    Returns the keys left at their initial values (the head's when reset). Any missing,
    unexpected or misshapen key is one error that lists them.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    heads = (head,) if isinstance(head, str) else head

    def in_head(key: str) -> bool:
        return any(key.startswith(f"{h}.") for h in heads)

    head_keys = sorted(k for k in own if in_head(k))
    if reset_head:
        state = {k: v for k, v in state.items() if not in_head(k)}
    missing = sorted(k for k in set(own) - set(state) - (set(head_keys) if reset_head else set())
                     if not k.endswith("num_batches_tracked"))  # older PyTorch did not save it
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                   for k in set(own) & set(state) if state[k].shape != own[k].shape)
    problems = [f"{label}: {_listing(keys)}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("shape (file vs model)", wrong)) if keys]
    if problems:
        hint = ""
        if any(in_head(w) for w in wrong):
            hint = "; set model.reset_head: true to re-initialise the classifier"
        raise CheckpointError(f"{path}: weights do not fit this model: {'; '.join(problems)}{hint}")
    model.load_state_dict(state, strict=False)
    return head_keys if reset_head else []
