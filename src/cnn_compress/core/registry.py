"""One registry type for every pluggable thing: models, data sets, pruners, formats, runtimes.

Each entry is a handler plus metadata (a file suffix, a classifier name...). A name that is not
registered is a ``ConfigError`` naming the params key and listing what is known, so a typo in
``params.yaml`` is one clear line, never a ``KeyError`` deep in a stage.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from cnn_compress.core.errors import ConfigError, UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, key: str, kind: str, error: type[UserError] = ConfigError) -> None:
        self.key = key  # the dotted params key that selects an entry, for error messages
        self.kind = kind
        self.error = error
        self._entries: dict[str, tuple[T, dict[str, Any]]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name", suffix=".onnx")``."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = (obj, meta)
            return obj

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def check(self, name: str, key: str | None = None) -> None:
        """``key``: the params key to name when another key than the usual one chose ``name``."""
        if name not in self._entries:
            raise self.error(f"{key or self.key}: unknown {self.kind} {name!r} (known: {', '.join(self.names())})")

    def get(self, name: str) -> T:
        self.check(name)
        return self._entries[name][0]

    def meta(self, name: str) -> dict[str, Any]:
        self.check(name)
        return self._entries[name][1]
