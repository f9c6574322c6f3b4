"""Print the accuracy-vs-size Pareto table over every run, variant and artifact.

Reads ``dvc exp show --json`` (the workspace, each commit, each experiment); one row per run,
variant and artifact (every runtime: torch, torch.export, ONNX Runtime...), with the variant's
pruning ratio, top-1 and true compressed size from ``metrics/<variant>/<artifact>.json`` and batch-1
latency from ``timings/<variant>/<artifact>.json``; runs with identical params and metrics are one row
(names joined: the workspace and the commit or experiment it holds).
A row is Pareto-optimal when no other row is at least as accurate and at least as small, and
strictly better in one. ``--wait`` first waits for the experiment queue to drain; ``--variant``
and ``--artifact`` keep only the names given.

    for r in 0.3 0.5 0.7 0.9; do dvc exp run --queue -S prune.ratio=$r; done; \\
      dvc queue start -j 2 && python tools/pareto.py --wait
"""
from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from exps import dvc, runs  # tools/exps.py: exp show flattened, identical runs merged


def rows_of(shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run (workspace, commit, experiment; identical runs once, names joined) and artifact."""
    rows = []
    for run in runs(shown):
        for (variant, artifact), figures in run["rows"].items():
            if "top1" in figures and "ccz_kib" in figures:
                ratio = run["params"].get(f"variants.{variant}.prune.ratio", run["params"].get("prune.ratio"))
                rows.append({"run": run["name"], "variant": variant, "artifact": artifact, "ratio": ratio,
                             "top1": figures["top1"], "ccz_kib": figures["ccz_kib"], "ms_b1": figures.get("ms")})
    return rows


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark each row ``pareto`` (higher top1, smaller compressed size); sorted by size."""
    for r in rows:
        r["pareto"] = not any(o["top1"] >= r["top1"] and o["ccz_kib"] <= r["ccz_kib"]
                              and (o["top1"] > r["top1"] or o["ccz_kib"] < r["ccz_kib"]) for o in rows)
    return sorted(rows, key=lambda r: (r["ccz_kib"], -r["top1"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", help="keep only this variant (repeatable)")
    parser.add_argument("--artifact", action="append", help="keep only this artifact (repeatable)")
    parser.add_argument("--wait", action="store_true", help="wait until no experiment is queued or running")
    args = parser.parse_args()
    while args.wait and re.search(r"\b(Queued|Running)\b", dvc("queue", "status")):
        time.sleep(5)
    rows = [r for r in rows_of(json.loads(dvc("exp", "show", "--json")))
            if (not args.variant or r["variant"] in args.variant) and (not args.artifact or r["artifact"] in args.artifact)]
    print("| run | variant | artifact | ratio | top-1 % | compressed KiB | b1 ms | Pareto |")
    print("|---|---|---|---:|---:|---:|---:|:-:|")
    for r in pareto(rows):
        print(f"| {r['run']} | {r['variant']} | {r['artifact']} | {r['ratio']} | {r['top1']:.2f} | "
              f"{r['ccz_kib']:.1f} | {r['ms_b1']} | {'yes' if r['pareto'] else ''} |")


if __name__ == "__main__":
    main()
