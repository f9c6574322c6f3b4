"""Ratio sweeps as queued DVC experiments run by two parallel workers (real dvc CLI)."""
import json
import re
import sys
import time

import pytest
from conftest import ROOT, copy_project, dvc, run


def _find(node, key):
    """Every value stored under ``key`` anywhere in ``dvc exp show --json`` output."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _find(v, key)


@pytest.mark.slow
def test_queued_ratio_sweep_runs_two_workers_and_exp_show_lists_metrics(reproduced, tmp_path):
    repo = copy_project(reproduced[0], tmp_path / "repo")  # reproduced and committed at ratio 0.5
    for ratio in (0.6, 0.7):
        dvc("exp", "run", "--queue", "-S", f"prune.ratio={ratio}", "-S", "quantize.formats=[fp32]",
            "-S", "export.formats=[ort_int8]", cwd=repo)  # fewer artifacts: the queue is what is tested
    dvc("queue", "start", "-j", "2", cwd=repo)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = dvc("queue", "status", cwd=repo).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(3)
    assert len(re.findall(r"\bSuccess\b", status)) == 2, status
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    sparsities = sorted(round(m["data"]["sparsity"]) for m in _find(shown, "metrics/main/fp32.json")
                        if isinstance(m, dict) and "data" in m)
    assert {60, 70} <= set(sparsities), sparsities  # both experiments' metrics, beside the baseline's 50
    assert 50 in sparsities

    table = run([sys.executable, str(ROOT / "tools/pareto.py"), "--wait"], cwd=repo).stdout
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()[2:]]
    assert {"0.5", "0.6", "0.7"} <= {c[3] for c in cells}, table
    assert {"fp32", "int8_static", "fixed4", "onnx", "ort_int8"} <= {c[2] for c in cells}  # every runtime
    assert "yes" in table  # at least one run is on the Pareto front
    only = run([sys.executable, str(ROOT / "tools/pareto.py"), "--artifact", "ort_int8"], cwd=repo).stdout
    assert {line.split("|")[3].strip() for line in only.splitlines()[2:]} == {"ort_int8"}
