"""Rewrite each stage's library deps and params in dvc.yaml from what its script imports and reads.

Run after adding an import or a params key: ``python tools/sync_dvc_yaml.py``. The layout of
dvc.yaml (comments, other deps, outs) is kept; tests/test_dvc_yaml.py checks the result.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

import yaml  # noqa: E402
from deps_util import expected_params, module_closure, stage_script  # noqa: E402


def main() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    order = list(params)
    out, stage, block = [], None, None
    for line in (ROOT / "dvc.yaml").read_text().splitlines():
        if m := re.match(r"^  (\w+):\s*$", line):
            stage, block = m.group(1), None
        elif m := re.match(r"^    (\w+):\s*$", line):
            block = m.group(1)
            out.append(line)
            cmd = stages[stage]["cmd"]
            script = stage_script(cmd)
            if block == "deps":
                out.append(f"      - {script.relative_to(ROOT)}")
                out += [f"      - {d}" for d in sorted(module_closure(script))]
            elif block == "params":
                keys = expected_params(cmd, params)
                out += [f"      - {s}.{k}" for s in order for k in params[s] if f"{s}.{k}" in keys]
            continue
        if block == "deps" and re.match(r"^      - (src/|stages/)", line):
            continue
        if block == "params" and line.startswith("      - "):
            continue
        out.append(line)
    (ROOT / "dvc.yaml").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
