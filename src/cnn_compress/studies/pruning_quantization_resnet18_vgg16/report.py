"""Study 002's generated results: results.md / results.csv (pandas), the DVC plots file and a figure."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cnn_compress.core import atomic
from cnn_compress.studies.checks import Check, count_line, section
from cnn_compress.studies.common import long_frame, machine_line, markdown, provenance, scale_note

KEYS = {"resnet18_summary": ["model"], "vgg16bn_summary": ["model"], "grid": ["pruning", "format", "runtime"]}


def figure(path: Path, g: pd.DataFrame) -> None:
    """Accuracy against latency and against size, one marker per pruning, one colour per format."""
    from cnn_compress.report.figures import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    markers = {"none": "o", "structured": "s", "unstructured": "^"}
    for ax, x, label in ((axes[0], "ms", "ms per image (batch 1, median)"), (axes[1], "size_MB", "size on disk (MB)")):
        for fmt, group in g.groupby("format", sort=False):
            for _, r in group.iterrows():
                ax.scatter(r[x], r.top1, marker=markers.get(r.pruning, "o"), color=f"C{list(g.format.unique()).index(fmt)}",
                           facecolors="none" if r.runtime == "compiled" else None, label=f"{fmt}, {r.pruning}, {r.runtime}")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 %")
    axes[0].legend(fontsize=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)


def finding(g: pd.DataFrame, checks: list[Check], model: str = "") -> str:
    at = g.set_index(["pruning", "format", "runtime"])
    st, sp = at.loc[("none", "static INT8", "eager")], at.loc[("structured", "FP32", "eager")]
    best = g.sort_values("ms").iloc[0]
    size = f"{st['smaller']:.1f}x smaller" if st["smaller"] >= 1 else f"{1 / st['smaller']:.1f}x larger"
    return (f"{model + ': ' if model else ''}static INT8 is {size} and {st['speedup']:.2f}x as fast as FP32 (eager) at "
            f"{st['drop_pts']:+.2f} points; 30% structured pruning gives {sp['speedup']:.2f}x at {sp['drop_pts']:+.2f} "
            f"points; the fastest artifact is {best['pruning']} / {best['format']} ({best['runtime']}, {best['speedup']:.2f}x, "
            f"{best['drop_pts']:+.2f} points); {count_line(checks)}.")


def write(out: Path, cfg: Any, tables: dict[str, pd.DataFrame], checks: list[Check], machine: dict[str, Any],
          have_published: bool, model: str = "") -> None:
    g = tables["grid"]
    atomic.write_text(out / "results.csv", long_frame(tables, lambda name, f: KEYS[name]).to_csv(index=False))
    plot = g.assign(label=g.pruning + " / " + g.format + " / " + g.runtime)[["label", "ms", "top1", "size_MB"]]
    plot = plot.rename(columns={"ms": "x"})
    atomic.write_text(out / "plots" / "study.csv", plot.to_csv(index=False))  # x: ms per image at batch 1
    figure(out / "figures" / "accuracy_vs_latency_size.png", g)
    parts = [
        f"# pruning-quantization-resnet18-vgg16, scale `{cfg.scale}`, table `{cfg.table}`\n", *scale_note(cfg),
        provenance("pruning-quantization-resnet18-vgg16", cfg, have_published)
        + " Columns: `pub` published, `ours` measured here, `diff` ours - pub, `drop pub` / `drop ours` "
        "points below each side's own baseline (compare these: the models and data differ, see the study README). "
        "Sizes in decimal MB; `trainable_params_M` is not measured (an INT8 program has no trainable parameters; the "
        "published figures copy the baseline's).\n",
        f"**Finding.** {finding(g, checks, model)}\n",
        f"Measured on {machine_line(machine)}. Latency: every artifact timed interleaved with every other, "
        f"{cfg.rounds} round-robin rounds at batch 1 on {cfg.threads} thread(s), median and a distribution-free 95% "
        "interval; accuracy on the whole test split.\n",
        f"## The published summary (`{cfg.table}`{f', ours: {model}' if model else ''})\n", markdown(tables[cfg.table]), "",
        f"## Every pruning x format (ours{f': {model}' if model else ''})\n",
        "`speedup` / `smaller`: against the unpruned FP32 model (eager) in the same run; `ccz_MB`: true compressed "
        "size; `compiled`: the same artifact under `torch.compile` (inductor; its accuracy is the eager one's).\n",
        markdown(g, floatfmt=".3g"), "", *section(checks, "pruning-quantization-resnet18-vgg16"),
    ]
    atomic.write_text(out / "results.md", "\n".join(parts))
