"""Module-name prefixes, as params name layers (``layer1`` is every layer under ``layer1.``)."""
from __future__ import annotations


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in prefixes)


def select_names(names: list[str], include: tuple[str, ...], exclude: tuple[str, ...]) -> list[str]:
    """The ``names`` under any ``include`` prefix (all when empty), minus those under ``exclude``."""
    return [n for n in names if (not include or under(n, include)) and not under(n, exclude)]
