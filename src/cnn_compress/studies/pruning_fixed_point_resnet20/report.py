"""results.md, results.csv, plots/study.csv and figures/ of the fixed-point study (pandas tables)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cnn_compress.core import atomic
from cnn_compress.studies.checks import Check, count_line, section
from cnn_compress.studies.common import long_frame, machine_line, markdown, provenance, scale_note

KEYS = {"pruning_finetune": "method", "quant_no_finetune": "nbits", "asym_quant_finetune": "nbits",
        "pruned_then_quantized": "nbits", "ablation": "setting", "distillation": "key",
        "allocation": "key", "amp": "variant"}


def plot_frame(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Accuracy against bits, one series per curve (ours and published): the DVC plot."""
    series = {"quant_no_finetune": ("asym", "sym"), "asym_quant_finetune": ("asym ft",),
              "pruned_then_quantized": ("before ft", "after ft")}
    prefix = {"pruned_then_quantized": "80% sparse + asym "}
    cols = {table: {f"{m} {side}": f"{prefix.get(table, '')}{m}" + (" (published)" if side == "pub" else "")
                    for m in ms for side in ("ours", "pub")} for table, ms in series.items()}
    recs = [{"series": label, "x": int(row.nbits), "top1": row[col]}
            for table, named in cols.items() for _, row in tables[table].iterrows()
            for col, label in named.items() if col in row and pd.notna(row[col])]
    return pd.DataFrame(recs, columns=["series", "x", "top1"])


def figure(path: Path, plot: pd.DataFrame) -> None:
    from cnn_compress.report.figures import plt, save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, group in plot.groupby("series", sort=False):
        ax.plot(group.x, group.top1, marker="o", linestyle="--" if "published" in label else "-", label=label,
                linewidth=1)
    ax.set_xlabel("bits (residual blocks)")
    ax.set_ylabel("top-1 %")
    ax.invert_xaxis()
    path.parent.mkdir(parents=True, exist_ok=True)
    ax.legend(fontsize=6)
    save_figure(fig, path)


def finding(tables: dict[str, pd.DataFrame], checks: list[Check], cfg: Any, model: str = "") -> str:
    """One line for the README: pruning and 4-bit drops against the published ones, and the shape."""
    prune = tables["pruning_finetune"].iloc[1:]
    q4 = tables["quant_no_finetune"].set_index("nbits").loc[4] if 4 in set(tables["quant_no_finetune"].nbits) else None

    def pair(ours: Any, pub: Any) -> str:
        return f"{ours:.2f}" + (f" (published {pub:.2f})" if pub is not None and pd.notna(pub) else "")

    drops = ", ".join(pair(r["acc drop ours"], r.get("acc drop pub")) for _, r in prune.iterrows())
    text = f"{model + ': ' if model else ''}80% sparsity costs {drops} points (one-shot, iterative, global iterative)"
    if q4 is not None:
        text += (f"; 4-bit `{cfg.setting}` without fine-tuning costs {pair(q4['asym drop ours'], q4.get('asym drop pub'))}"
                 f" asymmetric, {pair(q4['sym drop ours'], q4.get('sym drop pub'))} symmetric")
    return text + f"; {count_line(checks)}."


def distill_part(tables: dict[str, pd.DataFrame]) -> list[str]:
    if "distillation" not in tables:
        return []
    kd = tables["distillation"]
    return ["## Fine-tuning with and without distillation (ours; not in the published study)\n",
            "The same epochs and learning rate; `distilled` also learns from the unpruned model's softened outputs "
            "(`finetune.distill` of the variants named in the study section). `gain`: points distillation adds.\n",
            markdown(kd), "", f"Distillation recovers more in {int((kd.gain > 0).sum())} of {len(kd)} rows.\n"]


def allocation_part(tables: dict[str, pd.DataFrame]) -> list[str]:
    if "allocation" not in tables:
        return []
    t = tables["allocation"]
    return ["## Uniform against sensitivity-allocated compression (ours; not in the published study)\n",
            "The `sensitivity` stage scores each layer pruned alone and quantized alone on validation images "
            "(heatmap: `sensitivity/heatmap.png`, `dvc plots show`); `prune.allocation: sensitivity` then picks "
            "per-layer ratios with the same global sparsity, and `allocation: sensitivity` per-layer widths with the "
            "same mean bits per weight, compressing the least sensitive layers most. Same fine-tuning on both "
            "sides. `gain`: points the allocation adds over the uniform one.\n",
            markdown(t), "", f"The sensitivity allocation is better in {int((t.gain > 0).sum())} of {len(t)} rows.\n"]


def amp_part(tables: dict[str, pd.DataFrame]) -> list[str]:
    if "amp" not in tables:
        return []
    t = tables["amp"]
    return ["## Fine-tuning in FP32 and in mixed precision (ours; not in the published study)\n",
            "The same pruned model, epochs and learning rate; `amp` is `finetune.amp` (CPU: bfloat16 autocast). "
            "`images_per_s`: training images per second over the whole fine-tuning run (one process each; a ratio "
            "between two runs, not a benchmark). `drop vs first`: top-1 points below the FP32 run. `same_run_*`: "
            "the precisions' training steps timed against each other in the study stage (one batch each per round, "
            "the order rotating; median images/s, the median of the per-round ratios to FP32 and its 95% "
            "interval): the throughput comparison to quote.\n",
            markdown(t), ""]


def choice_part(choice: Any, cfg: Any) -> str:
    """Which split decided the setting and which one every accuracy is from (docs/selection-split.md)."""
    if choice is None:
        return ""
    how = (f"fixed in params.yaml (`study.{cfg.SECTION.split('.')[1]}.setting`)" if choice.fixed
           else f"chosen on `{choice.split}` as the setting whose drops come closest to the published ones")
    text = f"**Splits.** Every accuracy in the tables is on `{choice.reported}`. The setting in use, `{choice.setting}`, is {how}"
    if choice.fixed and choice.closest is not None:
        agree = "the same one" if choice.closest == choice.setting else f"`{choice.closest}`, not this one"
        text += f"; on `{choice.split}` the closest setting is {agree}"
    if not choice.separate:
        text += (f". The choice and the tables read the same split (`{choice.split}`): set `data.select_fraction` "
                 "to choose on a `select` split that the tables never report")
    return text + ".\n"


def write(out: Path, cfg: Any, tables: dict[str, pd.DataFrame], checks: list[Check], base: float,
          pub_base: float | None, machine: dict[str, Any], have_published: bool, model: str = "",
          choice: Any = None) -> None:
    atomic.write_text(out / "results.csv", long_frame(tables, lambda name, f: [KEYS[name]]).to_csv(index=False))
    plot = plot_frame(tables)
    atomic.write_text(out / "plots" / "study.csv", plot.to_csv(index=False))
    figure(out / "figures" / "accuracy_vs_bits.png", plot)
    o = f", ours: {model}" if model else ""  # every table names the model our rows are of
    parts = [
        f"# pruning-fixed-point-resnet20, scale `{cfg.scale}`\n", *scale_note(cfg),
        provenance("pruning-fixed-point-resnet20", cfg, have_published, ', in percent')
        + f" Our baseline: {base:.2f}% (published {pub_base if pub_base is not None else '?'}%). "
        "Columns: `pub` published, `ours` measured here, `diff` ours - pub, `drop pub` / `drop ours` points below "
        "each side's own baseline (compare these when the baselines differ).\n",
        f"**Finding.** {finding(tables, checks, cfg, model)}\n",
        choice_part(choice, cfg),
        f"Measured on {machine_line(machine)}.\n",
        f"## Pruning to 80% sparsity, fine-tuned (`pruning_finetune`{o})\n", markdown(tables["pruning_finetune"]), "",
        f"## Fixed point without fine-tuning, setting `{cfg.setting}` (`quant_no_finetune`{o})\n",
        markdown(tables["quant_no_finetune"]), "",
        f"## Asymmetric fixed point, fine-tuned (`asym_quant_finetune`{o})\n", markdown(tables["asym_quant_finetune"]), "",
        f"## The 80%-sparse `{cfg.combined}` model quantized (`pruned_then_quantized`{o})\n",
        markdown(tables["pruned_then_quantized"]), "",
        "## Which fixed-point setting explains the published drops (no fine-tuning)\n",
        "Drop in points per setting; columns `asy<N>` / `sym<N>` are asymmetric / symmetric at N bits. "
        f"`worst factor 4-6 bits`: the largest factor between our drop and the published one at 4-6 bits; "
        f"`close 4-6 bits`: every such drop within {cfg.close_ratio}x or {cfg.close_points} points of the published one; "
        f"a drop within {cfg.close_points} points counts as close whatever its factor (test-set noise decides there: "
        f"0.12 against 0.07 points is 7x), and `yes, N within {cfg.close_points:g} pts` counts the drops that are close "
        "only that way, so a large worst factor beside `yes` comes from those. Columns ending `, select` judge the same on "
        "the `select` split, which decides the closest setting; `in use` marks the setting of the tables above.\n",
        markdown(tables["ablation"]), "",
        *distill_part(tables),
        *allocation_part(tables),
        *amp_part(tables),
        *section(checks, "pruning-fixed-point-resnet20"),
    ]
    atomic.write_text(out / "results.md", "\n".join(parts))
