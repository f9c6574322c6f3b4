"""Print the accuracy-vs-size Pareto table over every run, variant and artifact.

Reads ``dvc exp show --json`` (the workspace, each commit, each experiment); one row per run,
variant and artifact (every runtime: torch, torch.export, ONNX Runtime...), with the variant's
pruning ratio, top-1, true compressed size and batch-1 latency from ``metrics/<variant>/<artifact>.json``.
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
import subprocess
import sys
import time
from typing import Any

METRIC = re.compile(r"^metrics/([^/]+)/([^/]+)\.json$")


def dvc(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if proc.returncode:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["failed"]
        print(f"error: dvc {' '.join(args)}: {lines[-1]}", file=sys.stderr)
        sys.exit(2)
    return proc.stdout


def _ratio(params: dict[str, Any], variant: str) -> Any:
    over = ((params.get("variants") or {}).get(variant) or {}).get("prune") or {}
    return over.get("ratio", (params.get("prune") or {}).get("ratio"))


def runs(shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten exp show: one row per run (workspace, commit, experiment) and artifact metrics file."""
    rows = []
    stack = list(shown)
    while stack:
        node = stack.pop(0)
        for exp in node.get("experiments") or []:
            stack += exp.get("revs") or []
        data = node.get("data") or {}
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        rev = str(node.get("rev"))
        name = node.get("name") or (rev[:7] if re.fullmatch(r"[0-9a-f]{40}", rev) else rev)
        for path, entry in sorted((data.get("metrics") or {}).items()):
            m, figures = METRIC.match(path), (entry or {}).get("data") or {}
            if m and "top1" in figures and "ccz_kib" in figures:
                rows.append({"run": name, "variant": m.group(1), "artifact": m.group(2),
                             "ratio": _ratio(params, m.group(1)), "top1": figures["top1"],
                             "ccz_kib": figures["ccz_kib"], "ms_b1": figures.get("ms_b1")})
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
    rows = [r for r in runs(json.loads(dvc("exp", "show", "--json")))
            if (not args.variant or r["variant"] in args.variant) and (not args.artifact or r["artifact"] in args.artifact)]
    print("| run | variant | artifact | ratio | top-1 % | compressed KiB | b1 ms | Pareto |")
    print("|---|---|---|---:|---:|---:|---:|:-:|")
    for r in pareto(rows):
        print(f"| {r['run']} | {r['variant']} | {r['artifact']} | {r['ratio']} | {r['top1']:.2f} | "
              f"{r['ccz_kib']:.1f} | {r['ms_b1']} | {'yes' if r['pareto'] else ''} |")


if __name__ == "__main__":
    main()
