"""Pipeline overheads, measured with the real dvc CLI in a throw-away copy of this project.

Prints: the full `dvc repro` from scratch (goal <= 300 s on 2 cores), a no-op `dvc repro`
(median of 5; goal <= 3 s), adding one variant (which runs only that variant), and a base
`prune.ratio` change (which re-runs main's chain from prune), each with its ratio to the full run,
and where the full run's time goes, stage by stage.

    python bench/pipeline.py [--out docs/pipeline-speed.md]

Each row also lists the stages that ran (from dvc's "Running stage" lines), so "only that
variant" is shown, not assumed. ``--out`` writes the table as markdown with the command.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]


Run = tuple[float, list[str], dict[str, float]]


def sh(cmd: list[str], cwd: Path) -> Run:
    """Run a command; its wall seconds, the dvc stages it ran and each stage's seconds (from one
    "Running stage" line to the next: the stage's process plus dvc's hashing and lock update)."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            if m := re.search(r"Running stage '([^']+)'", line):
                marks.append((m.group(1), time.perf_counter()))
    end = time.perf_counter()
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} failed with exit code {proc.returncode}")
    ends = [t for _, t in marks[1:]] + [end] if marks else []
    return end - start, [n for n, _ in marks], {n: e - t for (n, t), e in zip(marks, ends, strict=True)}


def edit(repo: Path, change) -> None:
    """Change params.yaml as a person would: round-trip, so every other value stays as written
    (a PyYAML dump turns `amp: off` into `amp: false`, a changed param that re-runs train)."""
    rt, path = YAML(), repo / "params.yaml"
    rt.preserve_quotes, rt.width = True, 4096
    params = rt.load(path.read_text())
    change(params)
    with path.open("w") as f:
        rt.dump(params, f)


def measure() -> list[tuple[str, float, list[str], dict[str, float]]]:
    dvc = [sys.executable, "-m", "dvc"]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        for name in ("stages", "src"):
            shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for name in ("params.yaml", "dvc.yaml", "place.yaml", ".gitignore", ".dvcignore", "inputs/README.md"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, repo / name)
        for cmd in (["git", "init", "-q"], [*dvc, "init", "-q"]):
            sh(cmd, repo)
        rows = [("full dvc repro (params.yaml)", *sh([*dvc, "repro"], repo))]
        noops = [sh([*dvc, "repro"], repo) for _ in range(5)]
        rows.append(("no-op dvc repro (median of 5)", statistics.median(t for t, _, _ in noops), [], {}))
        edit(repo, lambda p: p["variants"].update({"r70": {"prune": {"ratio": 0.7}}}))
        rows.append(("add variant r70 (prune.ratio 0.7)", *sh([*dvc, "repro"], repo)))
        edit(repo, lambda p: p["prune"].update({"ratio": 0.6}))
        rows.append(("base prune.ratio -> 0.6", *sh([*dvc, "repro"], repo)))
    return rows


def render(rows: list[tuple[str, float, list[str], dict[str, float]]]) -> list[str]:
    full = rows[0][1]
    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"python {platform.python_version()}", "",
             "| run | wall s | vs full | stages run |", "|---|---:|---:|---|"]
    for name, secs, ran, _ in rows:
        shown = f"{len(ran)}: {', '.join(ran)}" if ran and len(ran) <= 12 else f"{len(ran)} (all)" if ran else "none"
        lines.append(f"| {name} | {secs:.2f} | {secs / full:.3f} | {shown} |")
    noop = rows[1][1]
    lines += ["", f"full goal <= 300 s: {'met' if full <= 300 else 'NOT met'}; "
              f"no-op goal <= 3 s: {'met' if noop <= 3 else 'NOT met'}", "",
              "Where the full run's time goes (each stage from its \"Running stage\" line to the next):", "",
              "| stage | s | share |", "|---|---:|---:|"]
    for stage, secs in sorted(rows[0][3].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {stage} | {secs:.1f} | {secs / full:.1%} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the table as markdown here")
    args = parser.parse_args()
    lines = render(measure())
    print("\n".join(lines))
    if args.out:
        args.out.write_text(f"Generated by `python bench/pipeline.py {' '.join(sys.argv[1:])}`.\n\n"
                            + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
