"""Studies by name: each has a frozen config (its ``study.<name>`` params) and a runner."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_compress.core.registry import Registry


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
