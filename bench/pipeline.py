"""Pipeline overheads, measured with the real dvc CLI in a throw-away copy of this project.

Prints: the full `dvc repro` from scratch (goal <= 300 s on 2 cores), a no-op `dvc repro`
(median of 5; goal <= 3 s), adding one variant (which runs only that variant), and a base
`prune.ratio` change (which re-runs main's chain from prune), each with its ratio to the full run.

    python bench/pipeline.py
"""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def sh(cmd: list[str], cwd: Path) -> float:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def edit(repo: Path, change) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    change(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> None:
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
        full = sh([*dvc, "repro"], repo)
        noop = statistics.median(sh([*dvc, "repro"], repo) for _ in range(5))
        edit(repo, lambda p: p["variants"].update({"r70": {"prune": {"ratio": 0.7}}}))
        added = sh([*dvc, "repro"], repo)
        edit(repo, lambda p: p["prune"].update({"ratio": 0.6}))
        change = sh([*dvc, "repro"], repo)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"{'run':<34}{'wall s':>10}{'vs full':>10}")
    for name, secs in (("full dvc repro (params.yaml)", full), ("no-op dvc repro (median of 5)", noop),
                       ("add variant r70 (prune.ratio 0.7)", added), ("base prune.ratio -> 0.6", change)):
        print(f"{name:<34}{secs:>10.2f}{secs / full:>10.3f}")
    print(f"full goal <= 300 s: {'met' if full <= 300 else 'NOT met'}; no-op goal <= 3 s: {'met' if noop <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
