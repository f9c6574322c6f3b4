"""What every study's results share: where the published tables are, the machine and commit line,
markdown tables from data frames."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cnn_compress.core.errors import UserError


def shared_dir() -> Path | None:
    """``$CNN_COMPRESS_SHARED`` or ``../shared`` beside the repository (None when neither exists)."""
    env = os.environ.get("CNN_COMPRESS_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[4] / "shared")
    return next((p for p in candidates if p.is_dir()), None)


def published(file: str) -> dict[str, Any] | None:
    """A published study (``shared/studies/<file>``), or None when ``../shared`` is absent."""
    root = shared_dir()
    if root is None or not (root / "studies" / file).is_file():
        return None
    try:
        return yaml.safe_load((root / "studies" / file).read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"study: {root / 'studies' / file} is not valid YAML ({exc.__class__.__name__})") from None


def published_table(study: dict[str, Any] | None, table_id: str) -> pd.DataFrame | None:
    """One published table as a frame, its columns as in the source."""
    if study is None:
        return None
    for table in study.get("tables", []):
        if table["id"] == table_id:
            return pd.DataFrame(table["rows"], columns=table["columns"])
    raise UserError(f"study: the published study has no table '{table_id}'")


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_line(machine: dict[str, Any]) -> str:
    return (f"{machine['cpu']}, INT8 flags {', '.join(machine['int8_flags']) or 'none'}; torch {machine['torch']}, "
            f"onnxruntime {machine['onnxruntime']}, openvino {machine.get('openvino', 'none')}, "
            f"python {machine['python']}; commit {commit()}")


def markdown(frame: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A frame as a GitHub table (pandas + tabulate): integer columns as integers, blanks for
    missing values."""
    formats = ["d" if pd.api.types.is_integer_dtype(frame[c]) else floatfmt for c in frame.columns]
    cells = frame.astype(object).where(frame.notna(), None)
    return cells.to_markdown(index=False, floatfmt=formats, missingval="")


def read_training(name: str) -> dict[str, Any]:
    """A fine-tuning run's accuracy, precision and throughput (variants/<v>/finetune.json)."""
    try:
        return json.loads(Path("variants", name, "finetune.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"study: variant {name} has no fine-tuning results ({exc})") from None
