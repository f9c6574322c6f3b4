"""Print the accuracy-vs-size Pareto table of the workspace and every DVC experiment.

Reads ``dvc exp show --json``; one row per run with its prune ratio and method, and for one
benchmark variant (``--variant``, default ort_int8) its top-1, on-disk size and batch-1 latency.
A run is Pareto-optimal when no other run is at least as accurate and at least as small, and
strictly better in one. ``--wait`` first waits for the experiment queue to drain.

    for r in 0.3 0.5 0.7 0.9; do dvc exp run --queue -S prune.ratio=$r; done; \\
      dvc queue start -j 2 && python tools/pareto.py --wait
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from typing import Any


def dvc(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if proc.returncode:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["failed"]
        print(f"error: dvc {' '.join(args)}: {lines[-1]}", file=sys.stderr)
        sys.exit(2)
    return proc.stdout


def runs(shown: list[dict[str, Any]], variant: str) -> list[dict[str, Any]]:
    """Flatten exp show: the workspace, each commit, each experiment (those with metrics)."""
    rows = []
    stack = list(shown)
    while stack:
        node = stack.pop(0)
        for exp in node.get("experiments") or []:
            stack += exp.get("revs") or []
        data = node.get("data") or {}
        bench = ((data.get("metrics") or {}).get("metrics/benchmark.json") or {}).get("data") or {}
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        row = (bench.get("variants") or {}).get(variant)
        if row:
            prune = params.get("prune", {})
            rev = str(node.get("rev"))
            name = node.get("name") or (rev[:7] if re.fullmatch(r"[0-9a-f]{40}", rev) else rev)
            rows.append({"run": name, "method": prune.get("method"),
                         "ratio": prune.get("ratio"), "top1": row["top1"], "size_kib": row["size_bytes"] / 1024,
                         "latency_ms": row.get("latency_ms_b1_median")})
    return rows


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark each row ``pareto`` (higher top1, smaller size); sorted by size."""
    for r in rows:
        r["pareto"] = not any(o["top1"] >= r["top1"] and o["size_kib"] <= r["size_kib"]
                              and (o["top1"] > r["top1"] or o["size_kib"] < r["size_kib"]) for o in rows)
    return sorted(rows, key=lambda r: (r["size_kib"], -r["top1"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="ort_int8")
    parser.add_argument("--wait", action="store_true", help="wait until no experiment is queued or running")
    args = parser.parse_args()
    while args.wait and re.search(r"\b(Queued|Running)\b", dvc("queue", "status")):
        time.sleep(5)
    rows = pareto(runs(json.loads(dvc("exp", "show", "--json")), args.variant))
    print(f"| run | method | ratio | {args.variant} top-1 % | size KiB | b1 ms | Pareto |")
    print("|---|---|---:|---:|---:|---:|:-:|")
    for r in rows:
        print(f"| {r['run']} | {r['method']} | {r['ratio']} | {r['top1']:.2f} | {r['size_kib']:.1f} | "
              f"{r['latency_ms']} | {'yes' if r['pareto'] else ''} |")


if __name__ == "__main__":
    main()
