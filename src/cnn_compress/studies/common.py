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


def side_by_side(ours: pd.DataFrame, pub: pd.DataFrame | None, keys: list[str], columns: list[str],
                 accs: dict[str, tuple[float, float | None]]) -> pd.DataFrame:
    """Per published column ``c``: ``c pub``, ``c ours``, ``c diff``; for the accuracy columns in
    ``accs`` (column -> (our baseline, published baseline)) the drop from each side's baseline too.
    Rows: every published row and every row of ours (outer merge on ``keys``)."""
    frame = ours.rename(columns={c: f"{c} ours" for c in columns})
    if pub is not None:
        frame = pub.rename(columns={c: f"{c} pub" for c in columns}).merge(frame, on=keys, how="outer")
    out = frame[keys].copy()
    for c in columns:
        o = pd.to_numeric(frame.get(f"{c} ours"), errors="coerce") if f"{c} ours" in frame else None
        p = pd.to_numeric(frame[f"{c} pub"], errors="coerce") if f"{c} pub" in frame else None
        if p is not None:
            out[f"{c} pub"] = frame[f"{c} pub"]
        out[f"{c} ours"] = frame[f"{c} ours"] if o is not None else None
        if c in accs:
            if p is not None and o is not None:
                out[f"{c} diff"] = (o - p).round(2)
            base, pub_base = accs[c]
            if p is not None and pub_base is not None:
                out[f"{c} drop pub"] = (pub_base - p).round(2)
            out[f"{c} drop ours"] = (base - o).round(2) if o is not None else None
    extra = [c for c in ours.columns if c not in columns and c not in keys]
    return pd.concat([out, frame[extra]], axis=1).sort_values(keys, kind="stable").reset_index(drop=True)


def time_together(files: dict[str, Path], ds: Any, threads: int, rounds: int, max_seconds: float,
                  compiled: frozenset[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Median and 95% interval (ms, batch 1) of every artifact, timed interleaved in this process
    (round-robin rounds), so ratios between them hold when the machine drifts; the keys in
    ``compiled`` run under ``torch.compile`` (inductor, frozen weights)."""
    import statistics

    import torch

    from cnn_compress.measure.benchmark import Timed, median_ci95, time_interleaved, timing_inputs
    from cnn_compress.measure.config import BenchmarkConfig
    from cnn_compress.runtimes.runners import load_runner

    torch.set_num_threads(threads)
    timed = {key: Timed(load_runner(path, threads, (1,) if key in compiled else ()).predict)
             for key, path in files.items()}
    bench = BenchmarkConfig(batch_sizes=(1,), warmup=2, repeats=rounds, max_seconds=max_seconds, threads=threads)
    time_interleaved(timed, timing_inputs(ds, (1,)), bench)
    out = {}
    for key, t in timed.items():
        lo, hi = median_ci95(t.times[1])
        out[key] = {"ms": round(statistics.median(t.times[1]), 3), "ci": f"{lo:.3f}-{hi:.3f}"}
    return out
