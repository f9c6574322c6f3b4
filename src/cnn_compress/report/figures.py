"""Figures from the results frame and the curves the other stages wrote (PNG, for people)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from cnn_compress.core import atomic  # noqa: E402
from cnn_compress.report.tables import pareto  # noqa: E402


def read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _num(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def save_figure(fig: Any, path: Path) -> None:
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", metadata={"Software": None})
    plt.close(fig)


def _plain_log(axis: Any) -> None:
    """Log-axis ticks as plain numbers (0.5, 2, 50), not 5x10^-1 / 2x10^0: read at a glance. Over
    more than a decade only the 2s and 5s between the powers of ten are labelled, so labels do not
    overprint; within one, every tick."""
    low, high = sorted(axis.get_view_interval())
    wide = low > 0 and high / low > 10
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if not wide or f"{v:g}".lstrip("0.")[:1] in "25"
                                           else ""))


def _legend(ax: Any, **kwargs: Any) -> None:
    """A legend only when something is labelled (matplotlib warns on an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def accuracy_vs_size(frame: pd.DataFrame, path: Path) -> None:
    """Top-1 against true compressed size: simulated fixed-point variants have the on-disk size of
    FP32 but a few bits of information per weight, which only the compressed size shows. One colour
    per variant; only the Pareto-optimal points are labelled, so labels do not overprint."""
    fig, ax = plt.subplots(figsize=(8, 5))
    front = pareto(frame)
    for variant, group in frame.groupby("variant", sort=False):
        ax.scatter(group["ccz_kib"], group["top1"], label=variant, s=28)
    offsets = [(5, 4), (5, -11), (5, 15), (5, -22), (5, 26)]  # neighbours on the front: labels stagger
    for k, (_, row) in enumerate(frame[front].sort_values("ccz_kib").iterrows()):
        ax.annotate(f"{row['variant']}/{row['artifact']}", (row["ccz_kib"], row["top1"]), fontsize=7,
                    xytext=offsets[k % len(offsets)], textcoords="offset points",
                    arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
    ax.plot(*zip(*sorted(zip(frame[front]["ccz_kib"], frame[front]["top1"], strict=False)), strict=False), color="grey", lw=0.8, ls="--")
    ax.set(xscale="log", xlabel="true compressed size (KiB, log)", ylabel="top-1 (%)",
           title="Accuracy vs compressed size (labelled: Pareto front)")
    _plain_log(ax.xaxis)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=7, title="variant", title_fontsize=7)
    save_figure(fig, path)


def latency(frame: pd.DataFrame, path: Path) -> None:
    labels = [f"{v}/{a}" for v, a in zip(frame["variant"], frame["artifact"], strict=False)]
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.25 * len(frame) + 1)))
    ax.barh(labels, frame["ms_b1"], label="median")
    ax.scatter(frame["p90_b1"], labels, color="black", marker="|", s=80, label="p90", zorder=3)
    ax.set(xscale="log", xlabel="latency at batch 1 (ms, log)", title="Latency per artifact")
    _plain_log(ax.xaxis)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    _legend(ax)
    save_figure(fig, path)


def sparsity(per_variant: dict[str, list[dict[str, Any]]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4))
    for variant, rows in per_variant.items():
        ax.plot([r["layer"] for r in rows], [r["sparsity"] for r in rows], marker=".", label=variant)
    ax.set(ylabel="sparsity (%)", ylim=(-2, 102), title="Per-layer sparsity after pruning")
    ax.tick_params(axis="x", rotation=90, labelsize=6)
    _legend(ax, fontsize=7)
    save_figure(fig, path)


def curves(train: list[dict[str, Any]], finetunes: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Training, then each variant's fine-tuning after it on one epoch axis. Every epoch is a
    marker: a one-epoch fine-tune (the usual default) is a point, not an invisible line."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    offset = len(train)
    for label, rows, shift in [("train", train, 0)] + [(f"finetune {v}", r, offset) for v, r in finetunes.items()]:
        if not rows:
            continue
        epochs = [r["epoch"] + shift for r in rows]
        style = {"label": label, "marker": "o", "ms": 3}
        ax1.plot(epochs, [r["train_loss"] for r in rows], **style)
        if "val_acc" in rows[0]:
            ax2.plot(epochs, [r["val_acc"] for r in rows], **style)
    ax1.set(xlabel="epoch", ylabel="training loss (log)", yscale="log")
    _plain_log(ax1.yaxis)
    ax2.set(xlabel="epoch", ylabel="val top-1 (%)")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    _legend(ax1, fontsize=7)
    _legend(ax2, fontsize=7)
    save_figure(fig, path)


def accuracy_vs_ratio(frame: pd.DataFrame, path: Path) -> bool:
    """Top-1 against pruning ratio, one line per artifact name; drawn only when variants differ in
    ratio (otherwise there is no curve to show). Returns whether it was drawn."""
    rows = frame[frame["variant"] != "(trained)"]
    if rows["ratio"].nunique() < 2:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for artifact, group in rows.groupby("artifact", sort=False):
        group = group.sort_values("ratio")
        ax.plot(group["ratio"], group["top1"], marker="o", label=artifact)
    base = frame.loc[frame["artifact"] == "baseline", "top1"]
    if len(base):
        ax.axhline(base.iloc[0], color="grey", ls="--", lw=1, label="baseline")
    ax.set(xlabel="pruning ratio", ylabel="top-1 (%)", title="Accuracy vs pruning ratio")
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=7)
    save_figure(fig, path)
    return True
