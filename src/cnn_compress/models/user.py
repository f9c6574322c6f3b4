"""Your own model: ``model.arch: "package.module:callable"`` or ``torchvision:<name>``.

The callable is called as ``callable(num_classes=N, **model.args)`` and must return an
``nn.Module`` (a class works as well as a function). Its module is imported from the pipeline's
folder (the stage's working directory), then the repository root (``place.yaml``'s ``up``), then
``PYTHONPATH``. The checkpoint records the import path, the arguments and the sha256 of the
module's source file (:class:`Source`), so it rebuilds itself in any process that can import the
same module, and says so when that file has changed since. ``torchvision:<name>`` builds any
torchvision classification model by name (``torchvision.models.get_model``), untrained.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import yaml
from torch import nn

from cnn_compress.core.errors import ConfigError

TORCHVISION = "torchvision"


def is_import_path(arch: str) -> bool:
    return ":" in arch


@dataclass(frozen=True)
class Source:
    """Where a user model's code came from: recorded in its checkpoint."""

    module: str
    file: str  # relative to the folder it was found under (posix), or absolute (PYTHONPATH elsewhere)
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"module": self.module, "file": self.file, "sha256": self.sha256}


def search_roots(cwd: Path | None = None) -> list[Path]:
    """The pipeline's folder, then the repository root its place.yaml names (``up``)."""
    cwd = (cwd or Path.cwd()).resolve()
    roots = [cwd]
    place = cwd / "place.yaml"
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError, TypeError):
        up = (yaml.safe_load(place.read_text()) or {}).get("up")
        if up:
            roots.append((cwd / up).resolve())
    return list(dict.fromkeys(roots))


@contextlib.contextmanager
def _on_path(roots: list[Path]) -> Iterator[None]:
    saved = list(sys.path)
    sys.path[:0] = [str(r) for r in roots]
    try:
        yield
    finally:
        sys.path[:] = saved


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def split(arch: str) -> tuple[str, str]:
    module, _, attr = arch.partition(":")
    ok = all(p.isidentifier() for p in module.split(".")) and all(p.isidentifier() for p in attr.split("."))
    if not ok:
        raise ConfigError(f"model.arch: {arch!r} is not an import path (\"package.module:callable\", "
                          f"or \"torchvision:<name>\")")
    return module, attr


def import_module(name: str) -> ModuleType:
    try:
        with _on_path(search_roots()):
            return importlib.import_module(name)
    except Exception as exc:  # ModuleNotFoundError, or any error the module raises while it loads
        raise ConfigError(f"model.arch: cannot import {name} ({_first_line(exc)}); it is looked for in the "
                          "pipeline's folder, the repository root and PYTHONPATH") from None


def resolve(arch: str) -> Callable[..., Any]:
    """The callable an import path names (not for ``torchvision:``)."""
    module_name, attr = split(arch)
    obj: Any = import_module(module_name)
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None))]
            close = difflib.get_close_matches(part, public, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"model.arch: {module_name} has no {attr!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model.arch: {arch} is a {type(obj).__name__}, not a callable that builds the model")
    return obj


def _torchvision(name: str, num_classes: int, args: dict[str, Any]) -> nn.Module:
    from torchvision import models as tvm

    known = tvm.list_models(module=tvm)  # the classification models
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"model.arch: torchvision has no classification model {name!r}{hint}")
    if "weights" in args:
        raise ConfigError("model.args.weights: not here; load published weights with model.pretrained")
    try:
        return tvm.get_model(name, num_classes=num_classes, **args)
    except Exception as exc:
        raise ConfigError(f"model.arch: torchvision:{name}(num_classes={num_classes}, ...) failed "
                          f"({_first_line(exc)})") from None


def build(arch: str, num_classes: int, **args: Any) -> nn.Module:
    """``callable(num_classes=..., **args)``, checked to be an ``nn.Module``."""
    module_name, attr = split(arch)
    if module_name == TORCHVISION:
        return _torchvision(attr, num_classes, args)
    fn = resolve(arch)
    try:
        model = fn(num_classes=num_classes, **args)
    except Exception as exc:
        shown = ", ".join([f"num_classes={num_classes}", *(f"{k}={v!r}" for k, v in args.items())])
        raise ConfigError(f"model.arch: {arch}({shown}) failed ({_first_line(exc)})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.arch: {arch} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def module_file(arch: str) -> Path | None:
    """The source file of an import path's module (None: the zoo, torchvision, or no file)."""
    if not is_import_path(arch):
        return None
    module_name, _ = split(arch)
    if module_name == TORCHVISION:
        return None
    path = Path(getattr(import_module(module_name), "__file__", "") or "")
    return path.resolve() if path.is_file() else None  # a namespace or built-in module: nothing to digest


def source_of(arch: str) -> Source | None:
    """The module file behind an import path and its digest (None: the zoo, or torchvision)."""
    path = module_file(arch)
    if path is None:
        return None
    module_name, _ = split(arch)
    shown = str(path)
    for root in search_roots():
        if path.is_relative_to(root):
            shown = path.relative_to(root).as_posix()
            break
    return Source(module_name, shown, file_sha256(path))


def check_tracked(arch: str, cwd: Path | None = None) -> None:
    """The model's source file must be a dependency of ``train`` (place.yaml's ``model_code``, which
    dvc.yaml lists), or editing it would not re-run the pipeline."""
    cwd = (cwd or Path.cwd()).resolve()
    path, place = module_file(arch), cwd / "place.yaml"
    if path is None or not place.is_file():
        return  # the zoo, torchvision, or not run by the pipeline
    try:
        code = (yaml.safe_load(place.read_text()) or {}).get("model_code")
    except (yaml.YAMLError, AttributeError):
        return
    shown = path.relative_to(cwd).as_posix() if path.is_relative_to(cwd) else str(path)
    target = (cwd / str(code)).resolve() if code else None
    if target is None or not (path == target or path.is_relative_to(target)):
        raise ConfigError(f"place.yaml: model_code is {code!r}, but model.arch {arch} is defined in {shown}: set "
                          f"model_code: {shown} (a dependency of train in dvc.yaml), so that editing it re-runs train")


def changed_source(arch: str, recorded: dict[str, Any]) -> str | None:
    """Why the code of ``arch`` is not what a checkpoint was saved with (None: it is)."""
    now = source_of(arch)
    if now is None or not recorded.get("sha256"):
        return None
    if now.sha256 != recorded["sha256"]:
        return f"{now.file} changed since it was saved (sha256 {recorded['sha256'][:12]} then, {now.sha256[:12]} now)"
    return None


def check_io(model: nn.Module, arch: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """The model takes the data's images and returns one logit per class (one line if not)."""
    shape = "x".join(map(str, input_shape))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except Exception as exc:
        raise ConfigError(f"model.arch: {arch} cannot take {shape} inputs ({_first_line(exc)})") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"model.arch: {arch} returns a {type(out).__name__}; a classifier returns one logits tensor")
    if tuple(out.shape) != (2, num_classes):
        raise ConfigError(f"model.arch: {arch} outputs shape {tuple(out.shape)} for 2 {shape} images; the data has "
                          f"{num_classes} classes, so (2, {num_classes}) is expected (build the classifier from "
                          "num_classes)")


def classifier_names(model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> tuple[str, ...]:
    """The conv / linear layers that emit ``num_classes`` channels: the classifier (one per branch
    of a multi-branch head). Structured pruning never prunes their outputs; ``int8_mixed`` keeps them
    in float by default."""
    found: list[str] = []
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
                if isinstance(out, torch.Tensor) and out.dim() >= 2 and out.shape[1] == num_classes:
                    found.append(name)
            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, dtype=param.dtype if param is not None else torch.float32))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return tuple(dict.fromkeys(found))
