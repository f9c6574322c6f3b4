"""What resuming after an interruption saves, measured with the real dvc CLI in throw-away copies.

Two copies of this project (params.yaml as it is, or ``--epochs`` for train): one runs
`dvc repro train` uninterrupted; the other is killed with SIGKILL (process group: dvc and the
stage) once the stage has saved the state of epoch ``--kill-after``, then `dvc repro train` runs
again and continues from there. Prints the wall time of each run, the share of the uninterrupted
time the second run took, and whether the checkpoint, metrics and curve are byte-identical.

    python bench/resume.py [--epochs 15] [--kill-after 8] [--out docs/resume.md]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("models/baseline.pt", "metrics/train.json", "plots/train_curve.csv")
ENV = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
DVC = [sys.executable, "-m", "dvc"]


def project(dest: Path, epochs: int | None) -> Path:
    """A fresh git + DVC copy of the pipeline; prepare already run, so only train is timed."""
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("params.yaml", "dvc.yaml", "place.yaml", ".gitignore", ".dvcignore", "inputs/README.md"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, dest / name)
    if epochs:
        params = yaml.safe_load((dest / "params.yaml").read_text())
        params["train"]["epochs"] = epochs
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], [*DVC, "init", "-q"], [*DVC, "repro", "prepare"]):
        subprocess.run(cmd, cwd=dest, env=ENV, check=True, capture_output=True)
    return dest


def timed_repro(repo: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([*DVC, "repro", "train"], cwd=repo, env=ENV, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, proc.stdout + proc.stderr


def killed_repro(repo: Path, after: int) -> float:
    """Start `dvc repro train`, SIGKILL it once the resume state holds epoch ``after``."""
    start = time.perf_counter()
    proc = subprocess.Popen([*DVC, "repro", "train"], cwd=repo, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        states = list((repo / ".resume").glob("models__baseline.pt.*.pt"))
        try:
            if states and torch.load(states[0], weights_only=False)["epoch"] >= after:
                break
        except Exception:  # noqa: BLE001 (being replaced at this moment: look again)
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if (repo / "models/baseline.pt").exists():
        sys.exit("error: training finished before the kill; use a larger --epochs or a smaller --kill-after")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=0, help="train.epochs (0 = as in params.yaml)")
    parser.add_argument("--kill-after", type=int, default=8, help="kill once this epoch's state is saved")
    parser.add_argument("--out", type=Path, help="also write the table as markdown here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        whole, killed = project(Path(tmp) / "whole", args.epochs), project(Path(tmp) / "killed", args.epochs)
        epochs = yaml.safe_load((whole / "params.yaml").read_text())["train"]["epochs"]
        full, _ = timed_repro(whole)
        cut = killed_repro(killed, args.kill_after)
        resumed, log = timed_repro(killed)
        same = {name: (whole / name).read_bytes() == (killed / name).read_bytes() for name in OUTPUTS}
    lines = ["| run | wall s | vs uninterrupted |", "|---|---:|---:|",
             f"| uninterrupted `dvc repro train` ({epochs} epochs) | {full:.1f} | 1.000 |",
             f"| killed (SIGKILL) after epoch {args.kill_after} was saved | {cut:.1f} | {cut / full:.3f} |",
             f"| `dvc repro train` again (resumed) | {resumed:.1f} | {resumed / full:.3f} |", "",
             f"Resumed: {'yes' if 'resuming after epoch' in log else 'NO'}; byte-identical to the uninterrupted "
             f"run: {', '.join(f'{n} {chr(10003) if ok else chr(10007)}' for n, ok in same.items())}.",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"python {platform.python_version()}; each run pays ~5 s of dvc and stage start-up."]
    print("\n".join(lines))
    if args.out:
        args.out.write_text(f"Generated by `python bench/resume.py {' '.join(sys.argv[1:])}`.\n\n" + "\n".join(lines) + "\n")
    if not all(same.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
