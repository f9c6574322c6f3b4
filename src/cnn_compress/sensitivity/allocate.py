"""Allocations from a sensitivity table: per-layer pruning ratios and per-layer bit widths.

Both are greedy on measured costs, AIMET / Distiller style: a layer's cost at a setting is the
accuracy it loses when it alone is compressed that far (interpolated between measured points and
made monotone, so noise never makes more compression look cheaper). Costs are assumed to add up
over layers; that is the approximation, and the study compares the result with the uniform
allocation after the same fine-tuning rather than trusting it.
"""
from __future__ import annotations

from typing import Any

from cnn_compress.core.errors import ConfigError
from cnn_compress.core.names import select_names

STEP = 0.05  # ratio increments of the greedy pruning allocation


def _layers(table: dict[str, Any], key: str, need: str) -> list[dict[str, Any]]:
    layers = table.get("layers") or []
    if not layers or not any(row[key] for row in layers):
        raise ConfigError(f"{need}: needs the sensitivity stage's measurements; set sensitivity.{key if key != 'prune' else 'ratios'} "
                          "in params.yaml")
    return layers


def _curve(points: dict[str, float], base: float, at_zero: float) -> list[tuple[float, float]]:
    """(setting, loss) sorted by setting, the loss monotone in compression."""
    return sorted([(at_zero, 0.0)] + [(float(k), base - v) for k, v in points.items()])


def _interp(curve: list[tuple[float, float]], x: float) -> float:
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1] if x > curve[-1][0] else curve[0][1]


def prune_ratios(table: dict[str, Any], target: float, ignore: tuple[str, ...] = ()) -> dict[str, float]:
    """Per-layer ratios whose weighted mean over every measured layer is ``target``, pruning the
    layers that lose least per removed weight most. Layers under an ``ignore`` prefix stay dense."""
    rows = _layers(table, "prune", "prune.allocation: sensitivity")
    kept = set(select_names([row["layer"] for row in rows], (), ignore))
    layers = [row for row in rows if row["layer"] in kept]
    base = table["baseline_top1"]
    total = sum(row["params"] for row in table["layers"])
    curves = {}
    for row in layers:
        c = _curve(row["prune"], base, 0.0)
        c = [(x, max(y for _, y in c[: i + 1])) for i, (x, _) in enumerate(c)]  # monotone: cumulative max
        curves[row["layer"]] = c
    top = {name: c[-1][0] for name, c in curves.items()}
    ratios = {row["layer"]: 0.0 for row in rows}  # ignored layers stay at 0, listed all the same
    params = {row["layer"]: row["params"] for row in rows}
    need = target * total
    removed = 0.0
    while removed < need - 1e-9:
        movable = [n for n in curves if ratios[n] < top[n] - 1e-9]
        if not movable:
            reach = sum(top[n] * params[n] for n in curves) / total
            raise ConfigError(f"prune.ratio: {target} is beyond the sensitivity grid (at most {reach:.3f} with "
                              "every layer at its largest measured ratio); measure larger sensitivity.ratios")

        def cost(n: str) -> tuple[float, int]:
            r = ratios[n]
            nxt = min(r + STEP, top[n])
            return (_interp(curves[n], nxt) - _interp(curves[n], r)) / ((nxt - r) * params[n]), -params[n]

        name = min(movable, key=cost)
        nxt = min(ratios[name] + STEP, top[name])
        gain = (nxt - ratios[name]) * params[name]
        if removed + gain > need:  # the last step lands exactly on the target
            nxt = ratios[name] + (need - removed) / params[name]
            gain = need - removed
        ratios[name], removed = nxt, removed + gain
    return {n: round(r, 6) for n, r in ratios.items()}


def layer_bits(table: dict[str, Any], layers: list[str], avg_bits: float, max_bits: int) -> dict[str, int]:
    """Per-layer widths (from the measured ones, up to ``max_bits``) whose weight-weighted mean is at
    most ``avg_bits`` and whose summed measured loss is least: an exact multiple-choice knapsack over
    the layers (a Pareto front of (bits, loss) built layer by layer). Sensitive layers stay wide."""
    rows = {row["layer"]: row for row in _layers(table, "bits", "allocation: sensitivity")}
    if missing := [n for n in layers if n not in rows]:
        raise ConfigError(f"allocation: sensitivity: layer {missing[0]} has no measurement "
                          "(re-run the sensitivity stage on this model)")
    base = table["baseline_top1"]
    widths = sorted({int(b) for n in layers for b in rows[n]["bits"] if int(b) <= max_bits} | {max_bits})
    params = {n: rows[n]["params"] for n in layers}
    budget = avg_bits * sum(params.values())
    if widths[0] * sum(params.values()) > budget + 1e-9:
        raise ConfigError(f"avg_bits: {avg_bits} is below the narrowest measured width ({widths[0]})")
    loss = {}
    for n in layers:
        measured = {int(b): base - acc for b, acc in rows[n]["bits"].items()}
        wider = 0.0
        for w in reversed(widths):  # monotone: a narrower grid never loses less than a wider one
            wider = max(wider, measured.get(w, wider))
            loss[n, w] = wider
    front: list[tuple[int, float, tuple[int, ...]]] = [(0, 0.0, ())]  # (bits used, loss, widths so far)
    rest = sum(params.values())
    for n in layers:
        rest -= params[n]
        grown = sorted((b + w * params[n], round(c + loss[n, w], 9), (*ws, w)) for b, c, ws in front for w in widths)
        front, best = [], float("inf")
        for b, c, ws in grown:  # the Pareto front: more bits only when they lose less, and room left for the rest
            if c < best and b + widths[0] * rest <= budget + 1e-9:
                front.append((b, c, ws))
                best = c
    _, _, chosen = min(front, key=lambda s: (s[1], s[0]))
    return dict(zip(layers, chosen, strict=True))
