"""Study 003's generated results: results.md / results.csv (pandas) and the DVC plots file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cnn_compress.core import atomic
from cnn_compress.studies.checks import Check, count_line, section
from cnn_compress.studies.common import long_frame, machine_line, markdown, provenance, scale_note


def figure(path: Path, ours: pd.DataFrame) -> None:
    """Top-5 against size and against CPU time, one point per artifact."""
    from cnn_compress.report.figures import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, x, label in ((axes[0], "model_size_MB", "size on disk (MB)"), (axes[1], "inference_time_ms", "CPU ms (batch 1)")):
        for i, r in enumerate(ours.itertuples()):
            ax.scatter(getattr(r, x), r.top5_acc_pct, color=f"C{i}", label=r.table.replace("_", " "))
        ax.set_xlabel(label)
        ax.set_ylabel("top-5 %")
    axes[0].legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)


def finding(ours: pd.DataFrame, checks: list[Check], model: str = "") -> str:
    at = ours.set_index("table")
    base = at.loc["fp32_baseline"]
    parts = [f"{t.replace('_', ' ')} {base.top5_acc_pct - at.loc[t].top5_acc_pct:+.2f} top-5 points at "
             f"{at.loc[t].model_size_MB / base.model_size_MB:.2f}x the size, {at.loc[t].inference_time_ms / base.inference_time_ms:.2f}x the CPU time"
             for t in ("int8_pruned", "fp16_pruned", "mixed_precision_pruned", "pruned_only_fp32") if t in at.index]
    return f"{model + ': ' if model else ''}against FP32 (loss in points): " + "; ".join(parts) + \
        f"; {count_line(checks)}."


def write(out: Path, cfg: Any, frames: dict[str, pd.DataFrame], ours: pd.DataFrame, checks: list[Check],
          machine: dict[str, Any], have_published: bool, model: str = "") -> None:
    atomic.write_text(out / "results.csv", long_frame(frames | {"ours": ours}, lambda name, f: ["table"] if name == "ours" else ["device"]).to_csv(index=False))
    plot = ours.rename(columns={"inference_time_ms": "x"})[["table", "x", "top5_acc_pct", "model_size_MB"]]
    atomic.write_text(out / "plots" / "study.csv", plot.rename(columns={"top5_acc_pct": "top1"}).to_csv(index=False))
    figure(out / "figures" / "top5_vs_size_and_time.png", ours)
    parts = [f"# mixed-precision-pruning-resnet18-imagenet, scale `{cfg.scale}`\n", *scale_note(cfg),
             provenance("mixed-precision-pruning-resnet18-imagenet", cfg, have_published)
             + " Each published table has a CPU and a GPU row; ours fills the CPU row. Columns: `pub` "
             "published, `ours` measured here, `diff` ours - pub, `drop pub` / `drop ours` top-5 points below each side's "
             "FP32 baseline. Sizes in decimal MB.\n",
             f"**Finding.** {finding(ours, checks, model)}\n",
             f"Measured on {machine_line(machine)}. CPU time: every artifact timed interleaved with every other, "
             f"{cfg.rounds} round-robin rounds at batch 1 on {cfg.threads} thread(s), median.\n"]
    for name, frame in frames.items():
        parts += [f"## `{name}`{f' (ours: {model})' if model else ''}\n", markdown(frame), ""]
    parts += [f"## Every artifact (ours{f': {model}' if model else ''})\n", "`ccz_MB`: true compressed size; `sparsity`: measured from the artifact.\n",
              markdown(ours, floatfmt=".4g"), "", *section(checks, "mixed-precision-pruning-resnet18-imagenet")]
    atomic.write_text(out / "results.md", "\n".join(parts))
