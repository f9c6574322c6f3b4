"""Study 000's generated results: results.md / results.csv (pandas), the DVC plots file and a figure."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cnn_compress.core import atomic
from cnn_compress.studies.checks import Check, count_line, section
from cnn_compress.studies.common import long_frame, machine_line, markdown, provenance, scale_note


def figure(path: Path, s: pd.DataFrame) -> None:
    from cnn_compress.report.figures import plt, save_figure

    ft = s[s.artifact == "finetuned"]
    fig, (acc, cost) = plt.subplots(1, 2, figsize=(10, 4))
    acc.plot(ft.prune_ratio_pct, ft.top1, marker="o")
    acc.set_xlabel("global unstructured pruning ratio (%)")
    acc.set_ylabel("top-1 % after fine-tuning")
    cost.plot(ft.prune_ratio_pct, ft.size_MB, marker="o", label="size on disk (MiB)")
    cost.plot(ft.prune_ratio_pct, ft.ccz_MB, marker="s", label="true compressed size (MiB)")
    cost.set_xlabel("global unstructured pruning ratio (%)")
    cost.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)


def finding(s: pd.DataFrame, checks: list[Check], model: str = "") -> str:
    ft = s[s.artifact == "finetuned"].set_index("prune_ratio_pct")
    top = ft.index.max()
    return (f"{model + ': ' if model else ''}global pruning to {top}% changes top-1 by {ft.top1.loc[top] - ft.top1.loc[0]:+.2f} points after fine-tuning, "
            f"the file stays {ft.size_MB.loc[top]:.2f} MiB (true compressed size {ft.ccz_MB.loc[0]:.2f} -> "
            f"{ft.ccz_MB.loc[top]:.2f} MiB) and batch-1 latency {ft.ms.loc[0]:.2f} -> {ft.ms.loc[top]:.2f} ms; "
            f"{count_line(checks)}.")


def write(out: Path, cfg: Any, tables: dict[str, pd.DataFrame], checks: list[Check], machine: dict[str, Any],
          have_published: bool, model: str = "") -> None:
    s = tables["sweep"]
    atomic.write_text(out / "results.csv", long_frame(tables, lambda name, f: ["prune_ratio_pct", "artifact"] if name == "sweep" else [f.columns[0]]).to_csv(index=False))
    ft = s[s.artifact == "finetuned"]
    atomic.write_text(out / "plots" / "study.csv",
                      ft.rename(columns={"prune_ratio_pct": "x"})[["x", "top1", "size_MB", "ccz_MB", "ms"]].to_csv(index=False))
    figure(out / "figures" / "accuracy_and_size_vs_ratio.png", s)
    parts = [f"# approx-compression-resnet18-mobilenetv2, scale `{cfg.scale}`, group `{cfg.group}`\n", *scale_note(cfg),
             provenance("approx-compression-resnet18-mobilenetv2", cfg, have_published)
             + " Columns: `pub` published, `ours` measured here, `diff` ours - pub, `drop pub` / "
             "`drop ours` points below each side's own baseline (negative: above it). Sizes in MiB (the source's fit "
             "MiB).\n",
             f"**Finding.** {finding(s, checks, model)}\n",
             f"Measured on {machine_line(machine)}. Latency: every artifact timed interleaved with every other, "
             f"{cfg.rounds} round-robin rounds at batch 1 on {cfg.threads} thread(s), median and a distribution-free "
             "95% interval; accuracy on the whole test split.\n"]
    for name, frame in tables.items():
        if name != "sweep":
            parts += [f"## `{name}`{f' (ours: {model})' if model else ''}\n", markdown(frame), ""]
    parts += [f"## Every ratio (ours{f': {model}' if model else ''})\n", "`ccz_MB`: the true compressed size (sparse, entropy-coded weights).\n",
              markdown(s, floatfmt=".4g"), "", *section(checks, "approx-compression-resnet18-mobilenetv2")]
    atomic.write_text(out / "results.md", "\n".join(parts))
