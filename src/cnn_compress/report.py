"""Figures and a summary table from the metrics and plot files the other stages wrote."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cnn_compress import atomic  # noqa: E402


def read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _num(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", metadata={"Software": None})
    plt.close(fig)


def accuracy_vs_size(variants: dict[str, dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, v in variants.items():
        ax.scatter(v["size_bytes"] / 1024, v["top1"])
        ax.annotate(name, (v["size_bytes"] / 1024, v["top1"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set(xscale="log", xlabel="on-disk size (KiB, log)", ylabel="top-1 (%)", title="Accuracy vs size")
    ax.grid(alpha=0.3)
    _save(fig, path)


def latency(variants: dict[str, dict[str, Any]], path: Path) -> None:
    names = list(variants)
    med = [variants[n].get("latency_ms_b1_median", 0) for n in names]
    p90 = [variants[n].get("latency_ms_b1_p90", 0) for n in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(names, med, label="median")
    ax.scatter(names, p90, color="black", marker="_", s=200, label="p90", zorder=3)
    ax.set(ylabel="latency at batch 1 (ms)", title="Latency per variant")
    ax.tick_params(axis="x", rotation=45)
    ax.legend()
    _save(fig, path)


def sparsity(rows: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar([r["layer"] for r in rows], [r["sparsity"] for r in rows])
    ax.set(ylabel="sparsity (%)", ylim=(0, 100), title="Per-layer sparsity after pruning")
    ax.tick_params(axis="x", rotation=90, labelsize=7)
    _save(fig, path)


def curves(train: list[dict[str, Any]], finetune: list[dict[str, Any]], path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    offset = len(train)
    for label, rows, shift in (("train", train, 0), ("finetune", finetune, offset)):
        epochs = [r["epoch"] + shift for r in rows]
        ax1.plot(epochs, [r["train_loss"] for r in rows], label=f"{label} loss")
        if rows and "val_acc" in rows[0]:
            ax2.plot(epochs, [r["val_acc"] for r in rows], label=f"{label} val acc")
    ax1.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax2.set(xlabel="epoch", ylabel="val top-1 (%)")
    ax1.legend()
    ax2.legend()
    _save(fig, path)


COLUMNS = [("top1", "top-1 %"), ("top5", "top-5 %"), ("params_nonzero", "nonzero params"), ("macs", "MACs"),
           ("size_bytes", "size (KiB)"), ("size_zlib_bytes", "zlib (KiB)"), ("size_compressed_bytes", "compressed (KiB)"), ("sparsity", "sparsity %"), ("latency_ms_b1_median", "lat b1 ms"),
           ("latency_ms_b1_p90", "p90 ms")]


def summary_table(bench: dict[str, Any]) -> str:
    """A Markdown table like the studies' tables, plus the machine it was measured on."""
    variants = bench["variants"]
    tput = sorted({k for v in variants.values() for k in v if k.startswith("throughput_b")},
                  key=lambda k: int(k.removeprefix("throughput_b")))
    cols = COLUMNS + [(tput[-1], f"img/s b{tput[-1].removeprefix('throughput_b')}")] if tput else COLUMNS
    lines = ["| variant | runtime | " + " | ".join(h for _, h in cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for name, v in variants.items():
        cells = []
        for key, _ in cols:
            value = v.get(key, "")
            if key in ("size_bytes", "size_zlib_bytes", "size_compressed_bytes") and value != "":
                value = f"{value / 1024:.1f}"
            elif isinstance(value, float):
                value = f"{value:.2f}"
            cells.append(str(value))
        lines.append(f"| {name} | {v['runtime']} | " + " | ".join(cells) + " |")
    m = bench["machine"]
    lines += ["", f"Measured on {m['cpu']}, {m['threads']} thread(s), torch {m['torch']}, "
              f"onnxruntime {m['onnxruntime']}, INT8 flags: {', '.join(m['int8_flags']) or 'none'}."]
    return "\n".join(lines) + "\n"


SWEEP_FIELDS = ("top1", "top5", "sparsity", "params_nonzero", "macs", "size_bytes", "size_compressed_bytes",
                "latency_ms_b1_median", "runtime")


def sweep_rows(branches: dict[str, Path], main: Path | None) -> list[dict[str, Any]]:
    """One row per (ratio, variant) from each branch's benchmark.json; ratio 0 is the main baseline."""
    import json

    rows = []
    if main is not None and main.is_file():
        base = json.loads(main.read_text())["variants"].get("baseline")
        if base:
            rows.append({"ratio": 0.0, "variant": "baseline"} | {k: base.get(k) for k in SWEEP_FIELDS})
    for ratio, path in branches.items():
        for name, v in json.loads(path.read_text())["variants"].items():
            rows.append({"ratio": float(ratio), "variant": name} | {k: v.get(k) for k in SWEEP_FIELDS})
    return rows


def sweep_figure(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against pruning ratio and against true compressed size, one line per variant."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    base = next((r for r in rows if r["variant"] == "baseline"), None)
    for name in dict.fromkeys(r["variant"] for r in rows if r["variant"] != "baseline"):
        pts = sorted((r for r in rows if r["variant"] == name), key=lambda r: r["ratio"])
        ax1.plot([r["ratio"] for r in pts], [r["top1"] for r in pts], marker="o", label=name)
        ax2.plot([r["size_compressed_bytes"] / 1024 for r in pts], [r["top1"] for r in pts], marker="o", label=name)
    if base:
        ax1.axhline(base["top1"], color="grey", ls="--", lw=1, label="baseline")
        ax2.scatter([base["size_compressed_bytes"] / 1024], [base["top1"]], color="grey", marker="*", s=120)
    ax1.set(xlabel="pruning ratio", ylabel="top-1 (%)", title="Accuracy vs pruning ratio")
    ax2.set(xscale="log", xlabel="true compressed size (KiB, log)", ylabel="top-1 (%)", title="Accuracy vs size")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    _save(fig, path)


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per ratio and variant, sorted by ratio."""
    lines = ["| ratio | variant | top-1 % | sparsity % | MACs | size (KiB) | compressed (KiB) | lat b1 ms |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["ratio"]):
        lines.append(f"| {r['ratio']:g} | {r['variant']} | {r['top1']:.2f} | {r['sparsity'] or 0:.1f} | {r['macs']} | "
                     f"{r['size_bytes'] / 1024:.1f} | {(r['size_compressed_bytes'] or 0) / 1024:.1f} | "
                     f"{r['latency_ms_b1_median']:.3f} |")
    return "\n".join(lines) + "\n"
