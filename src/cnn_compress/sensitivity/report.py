"""The sensitivity table for people and for DVC: key figures, one CSV row per layer, a heatmap."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cnn_compress.report.figures import save_figure  # noqa: E402

# the CSV of a switched-off stage keeps the columns and says why it has no layers (the plots page shows
# the heatmap only: a Vega chart of this one row was an empty placeholder)
EMPTY_ROW = {"index": 0, "layer": "(off: no ratios or bits set)", "params": 0, "worst_prune": 0.0,
             "worst_bits": 0.0}


def columns(table: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, setting, label) of every measured column: pruning ratios, then bit widths (widest first)."""
    rows = table["layers"]
    if not rows:
        return []
    prune = [("prune", k, f"pruned {float(k):.0%}") for k in rows[0]["prune"]]
    bits = sorted(rows[0]["bits"], key=int, reverse=True)
    return prune + [("bits", k, f"{k}-bit") for k in bits]


def csv_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """Per layer: its size and the points lost at each setting; ``worst_prune`` / ``worst_bits``
    (the loss at the largest ratio / narrowest width) are the DVC plot's bars."""
    base, out = table.get("baseline_top1", 0.0), []
    cols = columns(table)
    for i, row in enumerate(table["layers"]):
        record: dict[str, Any] = {"index": i, "layer": row["layer"], "params": row["params"]}
        for kind, key, label in cols:
            record[f"drop {label}"] = round(base - row[kind][key], 4)
        prune = [base - v for _, v in sorted(row["prune"].items(), key=lambda kv: float(kv[0]))]
        bits = [base - v for _, v in sorted(row["bits"].items(), key=lambda kv: int(kv[0]))]
        record["worst_prune"] = round(prune[-1], 4) if prune else 0.0
        record["worst_bits"] = round(bits[0], 4) if bits else 0.0
        out.append(record)
    return out


def metrics(table: dict[str, Any]) -> dict[str, Any]:
    """What ``dvc metrics show`` lists: the reference accuracy and the most sensitive layers."""
    rows = csv_rows(table)
    out: dict[str, Any] = {"layers": len(rows)}
    if rows:
        out["baseline_top1"] = table["baseline_top1"]
        out["images"] = table["images"]
        for kind in ("prune", "bits"):
            worst = max(rows, key=lambda r, k=kind: r[f"worst_{k}"])
            out[f"most_sensitive_{kind}"] = {"layer": worst["layer"], "drop": worst[f"worst_{kind}"]}
    return out


def heatmap(table: dict[str, Any], path: Path) -> None:
    """Layers x settings, coloured by the points lost (PNG); when nothing was measured, a note sized
    to its text (the plots page lists this file either way)."""
    rows, cols = table["layers"], columns(table)
    if not (rows and cols):
        _placeholder(path)
        return
    fig, ax = plt.subplots(figsize=(1.6 + 0.7 * len(cols), 1.2 + 0.28 * len(rows)))
    base = table["baseline_top1"]
    grid = [[base - row[kind][key] for kind, key, _ in cols] for row in rows]
    im = ax.imshow(grid, cmap="magma_r", aspect="auto", vmin=0)
    for i, line in enumerate(grid):
        for j, v in enumerate(line):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=6,
                    color="white" if v > 0.6 * max(max(g) for g in grid) else "black")
    ax.set_xticks(range(len(cols)), [label for *_, label in cols], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [row["layer"] for row in rows], fontsize=7)
    fig.colorbar(im, ax=ax, label="top-1 points lost")
    ax.set_title(f"Per-layer sensitivity ({table['images']} {table['split']} images, "
                 f"reference {base:.2f}%)", fontsize=8)
    save_figure(fig, path)


PLACEHOLDER = ("Per-layer sensitivity: off",
               "sensitivity.ratios and sensitivity.bits are empty in params.yaml;\n"
               "set them (e.g. ratios: [0.5, 0.9], bits: [4]) to score each layer pruned or quantized alone.")


def _placeholder(path: Path) -> None:
    fig = plt.figure(figsize=(6.4, 1.3))
    fig.text(0.03, 0.72, PLACEHOLDER[0], fontsize=11, weight="bold", va="center")
    fig.text(0.03, 0.35, PLACEHOLDER[1], fontsize=8.5, va="center", linespacing=1.5)
    save_figure(fig, path)
