"""Compare runs in one narrow table: the params each run changed beside its headline metrics.

Reads ``dvc exp show --json`` (the workspace, the commit, its experiments): one row per run, variant
and artifact with top-1, sparsity, on-disk and true compressed size (``metrics/<variant>/<artifact>.json``)
and batch-1 latency (``timings/<variant>/<artifact>.json``); the `params` column lists only the
params.yaml keys whose values differ between the runs shown. Runs with the same params and metrics
(the workspace right after ``dvc exp run``, or a clean workspace and its commit) are one row group,
their names joined. Every line fits 160 columns.

    dvc exp run -S prune.ratio=0.7 && python tools/exps.py --artifact fp32 --artifact ort_int8
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import textwrap
from typing import Any

METRIC = re.compile(r"^(metrics|timings)/([^/]+)/([^/]+)\.json$")
WIDTH = 160
COLUMNS = (("top1", "top-1 %", "{:.2f}"), ("sparsity", "sparse %", "{:.1f}"), ("kib", "KiB", "{:.1f}"),
           ("ccz_kib", "ccz KiB", "{:.1f}"), ("ms", "ms b1", "{:.3f}"))  # "ms": the timings file's ms_b<N>


def dvc(*args: str) -> str:
    """A dvc command's stdout; its failure is one line on stderr and exit code 2."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if proc.returncode:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["failed"]
        print(f"error: dvc {' '.join(args)}: {lines[-1]}", file=sys.stderr)
        sys.exit(2)
    return proc.stdout


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested params as dotted keys -> compact JSON values (lists and empty mappings are leaves)."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): json.dumps(tree, separators=(",", ":"))}


def runs(shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per run (workspace, commit, experiment) in ``exp show`` order: its name, flat
    params and {(variant, artifact): figures}; identical runs merged into one, names joined."""
    out: list[dict[str, Any]] = []
    stack = list(shown)
    while stack:
        node = stack.pop(0)
        stack[:0] = [rev for exp in node.get("experiments") or [] for rev in exp.get("revs") or []]
        data = node.get("data") or {}
        rev = str(node.get("rev"))
        name = node.get("name") or (rev[:7] if re.fullmatch(r"[0-9a-f]{40}", rev) else rev)
        params = flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
        rows: dict[tuple[str, str], dict[str, float]] = {}
        for path, entry in (data.get("metrics") or {}).items():
            m, figures = METRIC.match(path), (entry or {}).get("data") or {}
            if m:
                row = rows.setdefault((m.group(2), m.group(3)), {})
                row |= {("ms" if re.fullmatch(r"ms_b\d+", k) else k): v for k, v in figures.items()}
        if not rows:
            continue
        same = next((r for r in out if r["params"] == params and r["rows"] == rows), None)
        if same is not None:
            same["name"] += f", {name}"
        else:
            out.append({"name": name, "params": params, "rows": rows})
    return out


def changed(all_runs: list[dict[str, Any]]) -> list[str]:
    """The params keys whose values differ between the runs (missing counts as a value)."""
    keys = sorted({k for r in all_runs for k in r["params"]})
    return [k for k in keys if len({r["params"].get(k) for r in all_runs}) > 1]


def order(key: tuple[str, str]) -> tuple[str, int, str]:
    """Variants by name; in each, the checkpoints first (pipeline order), then the artifacts by name."""
    variant, artifact = key
    return variant, {"pruned": 0, "finetuned": 1}.get(artifact, 2), artifact


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def table(all_runs: list[dict[str, Any]], keep: Any = lambda v, a: True) -> list[str]:
    """The lines of the comparison: run | params | variant/artifact | figures, each <= ``WIDTH``."""
    keys = changed(all_runs)
    head = ["run", "params (changed)", "variant/artifact", *(label for _, label, _ in COLUMNS)]
    body: list[list[str]] = []
    for run in all_runs:
        setting = ", ".join(f"{k}={run['params'].get(k, '-')}" for k in keys) or "-"
        wrapped = textwrap.wrap(setting, 44, break_long_words=True) or ["-"]
        rows = [k for k in sorted(run["rows"], key=order) if keep(*k)]
        for i in range(max(len(rows), len(wrapped))):
            cells = [cut(run["name"], 22) if i == 0 else "", wrapped[i] if i < len(wrapped) else ""]
            if i < len(rows):
                figures = run["rows"][rows[i]]
                cells.append(cut("/".join(rows[i]), 34))
                cells += [fmt.format(figures[k]) if isinstance(figures.get(k), (int, float)) else "-"
                          for k, _, fmt in COLUMNS]
            else:
                cells += [""] * (1 + len(COLUMNS))
            body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    def line(cells: list[str]) -> str:
        parts = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()[:WIDTH]
    return [line(head), line(["-" * w for w in widths]), *map(line, body)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", help="keep only this variant (repeatable)")
    parser.add_argument("--artifact", action="append", help="keep only this artifact (repeatable)")
    args = parser.parse_args()
    shown = json.loads(dvc("exp", "show", "--json"))
    print("\n".join(table(runs(shown), lambda v, a: (not args.variant or v in args.variant)
                                                     and (not args.artifact or a in args.artifact))))


if __name__ == "__main__":
    main()
