"""Pipeline overheads, measured with the real dvc CLI in a throw-away copy of this project.

Prints: the full `dvc repro` from scratch, a no-op `dvc repro` (median of 5; goal <= 3 s), and a
`prune.ratio` change (which re-runs prune and what follows it), each with its ratio to the full
run. `--tiny` uses the test suite's small settings instead of params.yaml.

    python bench/pipeline.py [--tiny]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import TINY_PARAMS, make_project, set_params  # noqa: E402


def timed(cmd: list[str], cwd: Path) -> float:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the test suite's tiny settings")
    args = parser.parse_args()
    dvc = [sys.executable, "-m", "dvc"]
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_project(Path(tmp), None)
        if not args.tiny:  # undo the tiny settings make_project applies
            (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
        full = timed([*dvc, "repro"], repo)
        noop = statistics.median(timed([*dvc, "repro"], repo) for _ in range(5))
        ratio = 0.7 if args.tiny else 0.6
        set_params(repo, {"prune": {"ratio": ratio}})
        change = timed([*dvc, "repro"], repo)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"settings: {'tiny (tests)' if args.tiny else 'params.yaml'}{'' if not args.tiny else ' ' + str(TINY_PARAMS['model'])}")
    print(f"{'run':<28}{'wall s':>10}{'vs full':>10}")
    for name, secs in (("full dvc repro", full), ("no-op dvc repro (median/5)", noop), (f"prune.ratio -> {ratio}", change)):
        print(f"{name:<28}{secs:>10.2f}{secs / full:>10.3f}")
    print(f"no-op goal <= 3 s: {'met' if noop <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
