"""The results table as a data frame: every variant's artifacts beside the baseline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cnn_compress.core.config import parse_section
from cnn_compress.prune.config import PruneConfig

COLUMNS = {  # data-frame column -> markdown header
    "variant": "variant", "artifact": "artifact", "describe": "what", "runtime": "runtime", "top1": "top-1 %",
    "drop": "drop (pts)", "sparsity": "sparsity %", "params_nonzero": "nonzero params", "mmacs": "MMACs",
    "kib": "size KiB", "ccz_kib": "compressed KiB", "ms_b1": "ms b1", "p90_b1": "p90 b1",
}


def load_rows(baseline: Path, variant_dirs: list[Path], configs_dir: Path) -> pd.DataFrame:
    """One row per (variant, artifact) from the benchmark details files, plus the baseline."""
    records: list[dict[str, Any]] = []
    base = json.loads(baseline.read_text())
    records += [_record("(trained)", name, row, {}) for name, row in base["artifacts"].items()]
    for folder in variant_dirs:
        bench = json.loads((folder / "benchmark.json").read_text())
        variant = bench["variant"]
        prune_cfg = configs_dir / variant / "prune.json"
        prune = json.loads(prune_cfg.read_text())["prune"] if prune_cfg.is_file() else {}
        records += [_record(variant, name, row, prune) for name, row in bench["artifacts"].items()]
    frame = pd.DataFrame.from_records(records)
    frame["drop"] = (frame.loc[frame.artifact == "baseline", "top1"].iloc[0] - frame["top1"]).round(2)
    return frame


def _record(variant: str, name: str, row: dict[str, Any], prune: dict[str, Any]) -> dict[str, Any]:
    tput = max((k for k in row if k.startswith("throughput_b")), key=lambda k: int(k.removeprefix("throughput_b")))
    return {"variant": variant, "artifact": name, "describe": row.get("describe", ""), "runtime": row["runtime"],
            "top1": row["top1"], "sparsity": row["sparsity"], "params_nonzero": row["params_nonzero"],
            "mmacs": round(row["macs"] / 1e6, 2), "kib": round(row["size_bytes"] / 1024, 1),
            "ccz_kib": round(row.get("size_compressed_bytes", 0) / 1024, 1),
            "ms_b1": row.get("latency_ms_b1_median"), "p90_b1": row.get("latency_ms_b1_p90"),
            "throughput": row[tput], "throughput_batch": int(tput.removeprefix("throughput_b")),
            "ratio": prune.get("ratio", 0.0), "method": _method(prune), "order": prune.get("order", "")}


def _method(prune: dict[str, Any]) -> str:
    """The pruning as the resolved config says, chained passes included (``blocks+structured 0.3``)."""
    return parse_section(PruneConfig, prune).label() if prune else ""


def pareto(frame: pd.DataFrame, x: str = "ccz_kib", y: str = "top1") -> pd.Series:
    """True where no other row is at least as accurate and at least as small, and better in one."""
    xs, ys = frame[x].to_numpy(), frame[y].to_numpy()
    return pd.Series([not ((ys >= yi) & (xs <= xi) & ((ys > yi) | (xs < xi))).any() for xi, yi in zip(xs, ys, strict=False)],
                     index=frame.index)


def markdown(frame: pd.DataFrame, machine: dict[str, Any]) -> str:
    """The summary table (pandas ``to_markdown``) and the machine it was measured on."""
    batch = int(frame["throughput_batch"].max())
    shown = frame[list(COLUMNS) + ["throughput"]].rename(columns=COLUMNS | {"throughput": f"img/s b{batch}"})
    table = shown.to_markdown(index=False, floatfmt=".2f", intfmt="d")
    return table + (f"\n\nMeasured on {machine['cpu']}, {machine['threads']} thread(s), torch {machine['torch']}, "
                    f"onnxruntime {machine['onnxruntime']}, INT8 flags: {', '.join(machine['int8_flags']) or 'none'}.\n")
