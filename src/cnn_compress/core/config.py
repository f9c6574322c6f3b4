"""Typed params: the coercion and error machinery every section's dataclass goes through.

Each package keeps its own section class beside the code that reads it (``prune/config.py``...);
this module only knows how to check a mapping against a frozen dataclass. Unknown keys, wrong
types and impossible values are rejected with one line naming the dotted key
(``prune.ratio: must be in [0, 1), got 1.5``).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from cnn_compress.core.errors import ConfigError

T = TypeVar("T")

PARAMS_FILE = "params.yaml"
# the sections params.yaml may hold: the shared ones, the base of every variant, and the variants
SECTIONS = ("data", "model", "train", "prune", "finetune", "quantize", "export", "benchmark", "sensitivity", "study",
            "variants")


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml; reject a missing file, bad YAML and unknown sections."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw == {}:
        raise ConfigError(f"{path}: is empty (expected the sections {', '.join(SECTIONS)})")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    for name in raw:
        if name not in SECTIONS:
            raise ConfigError(f"{name}: unknown params section{_suggest(str(name), SECTIONS)}")
    return raw


def load_section(cls: type[T], params: dict[str, Any] | None = None) -> T:
    """Parse and validate one section (the dataclass's SECTION) of params.yaml."""
    params = read_params() if params is None else params
    section = cls.SECTION  # type: ignore[attr-defined]
    if params.get(section) is None:  # absent or empty: say so, a typo in the section name looks the same
        print(f"note: params.yaml has no '{section}' settings; using the defaults of every {section} key",
              file=sys.stderr)
    return parse_section(cls, params.get(section) or {})


def load_resolved(path: str | Path, *classes: type) -> tuple[Any, ...]:
    """The sections a variant stage reads, from its resolved config file (written by the
    ``variants`` stage). Each class parses its own section; a section the file does not hold
    (the stage does not read it for this variant) comes back as None."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the resolved variant config ({type(exc).__name__}); "
                          "is the variant in params.yaml, and has `dvc repro` run the variants stage?") from None
    return tuple(parse_section(cls, raw[cls.SECTION]) if cls.SECTION in raw else None  # type: ignore[attr-defined]
                 for cls in classes)


def parse_section(cls: type[T], raw: Any) -> T:
    section = cls.SECTION  # type: ignore[attr-defined]
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    custom = getattr(cls, "COERCE", {})  # fields with their own parser (quantize.formats)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{section}.{key}: unknown key{_suggest(str(key), fields)}")
        parse = custom.get(key)
        values[key] = parse(value, f"{section}.{key}") if parse else coerce(value, hints[key], f"{section}.{key}")
    return cls(**values)


def _suggest(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(known))})"


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type (a dataclass too); YAML lists become tuples (frozen, hashable)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        require(value in choices, key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is tuple:
        item = typing.get_args(hint)[0]
        require(isinstance(value, (list, tuple)), key, f"must be a list, got {value!r}")
        return tuple(coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:  # per-layer settings: {layer name: value}
        key_type, item = typing.get_args(hint)
        require(isinstance(value, dict), key, f"must be a mapping, got {value!r}")
        return {coerce(k, key_type, key): coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        if len(real := [o for o in options if o is not type(None)]) == 1:  # X | None: X's own error
            return coerce(value, real[0], key)
        for option in options:
            try:
                return coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: unexpected value {value!r}")
    if dataclasses.is_dataclass(hint):
        require(isinstance(value, dict), key, f"must be a mapping, got {value!r}")
        fields = {f.name for f in dataclasses.fields(hint)}
        for k in value:
            require(k in fields, f"{key}.{k}", f"unknown key{_suggest(str(k), fields)}")
        nested = typing.get_type_hints(hint)
        values = {k: coerce(v, nested[k], f"{key}.{k}") for k, v in value.items()}
        return _checked(hint, values, key)
    if hint is type(None):
        require(value is None, key, f"must be null, got {value!r}")
        return None
    if hint is bool:
        require(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        require(isinstance(value, int) and not isinstance(value, bool), key, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        require(ok, key, f"must be a number, got {value!r}")
        # YAML reads .inf / .nan as floats: a setting of either trains NaN models without a word
        number = float(value) if not isinstance(value, int) or abs(value) < 2**1023 else math.inf
        require(math.isfinite(number), key, f"must be a finite number, got {repr(value)[:40]}")
        return number
    if hint is str:
        require(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported field type {hint}")  # a bug in this module, not user input


def _checked(cls: type, values: dict[str, Any], key: str) -> Any:
    """Build a nested config; its own checks name their keys from its section (``prune.ratio``),
    so renamed to where it sits (``prune.then.ratio``)."""
    try:
        return cls(**values)
    except ConfigError as exc:
        section, message = getattr(cls, "SECTION", ""), str(exc)
        if section and key != section and message.startswith(f"{section}."):
            raise ConfigError(key + message[len(section):]) from None
        raise


def to_dict(cfg: Any) -> dict[str, Any]:
    """A resolved config as plain data, for self-describing checkpoints and metrics."""
    out = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


