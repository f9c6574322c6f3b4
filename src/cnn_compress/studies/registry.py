"""Studies by name: each has a frozen config (its ``study.<name>`` params) and a runner.

A study is a module (or package) of this package named like its ``study.<name>`` key, e.g.
``study.deploy_cpu`` runs ``cnn_compress.studies.deploy_cpu``; it registers itself on import.
The study stage depends on that module's own path, so editing one study never re-runs another.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_compress.core.errors import ConfigError
from cnn_compress.core.registry import Registry

SHARED = ("__init__", "registry", "common", "checks")  # modules every study uses; not studies themselves


@dataclass(frozen=True)
class StudyContext:
    """What a study's runner sees: the variants of this folder and where to write."""

    variants: list[str]
    out: Path  # the study folder (results.md, results.csv, figures/)
    params: dict[str, Any]  # the whole params.yaml, for the setup it reports


StudyRunner = Callable[[Any, StudyContext], dict[str, Any]]  # returns the study's metrics
STUDIES: Registry[StudyRunner] = Registry("study", "study")  # meta: config class


def register_study(name: str, config: type) -> Callable[[StudyRunner], StudyRunner]:
    return STUDIES.register(name, config=config)


def known() -> list[str]:
    """Every study this installation has (the modules of this package)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in SHARED)


def load(name: str) -> StudyRunner:
    """The runner of study ``name``, importing its module (which registers it)."""
    if name not in known():
        raise ConfigError(f"study.{name}: no such study (known: {', '.join(known())})")
    importlib.import_module(f"cnn_compress.studies.{name}")
    return STUDIES.get(name)
