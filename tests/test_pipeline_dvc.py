"""The DAG driven by the real ``dvc`` CLI in a throw-away git repo, with tiny settings."""
import hashlib
import json
import re
import statistics

import pytest
from conftest import copy_project, dvc, git, set_params

STAGES = ["prepare", "train", "prune", "finetune", "quantize", "export", "benchmark", "report", "sweep"]
VARIANTS = {"baseline", "pruned", "finetuned", "fp32", "int8_static", "fixed4", "onnx", "ort_int8"}
UP_TO_DATE = "Data and pipelines are up to date."


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@.-]+)'", output)


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_repro_from_scratch_runs_every_stage_and_writes_every_output(reproduced):
    repo, out = reproduced
    assert ran(out) == STAGES
    bench = json.loads((repo / "metrics/benchmark.json").read_text())
    assert set(bench["variants"]) == VARIANTS
    for name, row in bench["variants"].items():
        for key in ("top1", "top5", "loss", "params", "macs", "size_bytes", "latency_ms_b1_median",
                    "latency_ms_b1_p90", "throughput_b8", "runtime", "size_zlib_bytes", "size_compressed_bytes",
                    "weights_dense_bytes", "compression_ratio"):
            assert key in row, (name, key)
    assert bench["machine"]["threads"] == 1 and bench["machine"]["torch"]
    assert sorted(p.name for p in (repo / "reports/figures").iterdir()) == [
        "accuracy_vs_size.png", "latency.png", "sparsity.png", "training_curves.png"]
    assert "| ort_int8 |" in (repo / "reports/summary.md").read_text()
    assert sorted(p.name for p in (repo / "models/compressed").iterdir()) == sorted(f"{v}.ccz" for v in VARIANTS)
    assert json.loads((repo / "metrics/export.json").read_text())["onnx"]["top1_agreement"] == 100.0
    assert json.loads((repo / "metrics/finetune.json").read_text())["lr"] == 0.005  # by_ratio row 1 (0.5)
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout


@pytest.mark.slow
def test_ratio_change_reruns_from_prune_and_metrics_diff(reproduced, tmp_path):
    repo = copy_project(reproduced[0], tmp_path / "repo")
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout  # a copy (like a clone + pull) is up to date
    pruned_at_05 = md5(repo / "models/pruned.pt")

    # retraining with the same seed writes the same bytes: nothing downstream becomes stale
    baseline = md5(repo / "models/baseline.pt")
    assert ran(dvc("repro", "-f", "-s", "train", cwd=repo).stdout) == ["train"]
    assert md5(repo / "models/baseline.pt") == baseline
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout

    # a ratio change re-runs prune and only what follows it
    set_params(repo, {"prune": {"ratio": 0.8}})
    assert ran(dvc("repro", cwd=repo).stdout) == STAGES[2:]
    assert json.loads((repo / "metrics/prune.json").read_text())["sparsity"] == pytest.approx(80, abs=0.5)

    # after committing, metrics diff shows the changed sparsity, accuracy and compressed size
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "ratio 0.8", cwd=repo)
    diff = json.loads(dvc("metrics", "diff", "HEAD~1", "--json", cwd=repo).stdout)
    assert diff["metrics/prune.json"]["sparsity"]["old"] == pytest.approx(50, abs=0.5)
    assert diff["metrics/prune.json"]["sparsity"]["new"] == pytest.approx(80, abs=0.5)
    assert "variants.pruned.top1" in diff["metrics/benchmark.json"]
    zlib_size = diff["metrics/benchmark.json"]["variants.finetuned.size_zlib_bytes"]
    assert zlib_size["new"] < zlib_size["old"]  # more zeros, smaller compressed file
    true_size = diff["metrics/benchmark.json"]["variants.ort_int8.size_compressed_bytes"]
    assert true_size["new"] < true_size["old"]  # sparse + entropy-coded INT8: the Deep Compression size

    # plots diff overlays both commits' per-layer sparsity, as JSON and as the HTML page users open
    plots = json.loads(dvc("plots", "diff", "HEAD~1", "--json", "--targets", "Per-layer sparsity", cwd=repo).stdout)
    by_rev: dict[str, list[float]] = {}
    for row in plots["data"]["Per-layer sparsity"][0]["content"]["data"]["values"]:
        by_rev.setdefault(row["rev"], []).append(float(row["sparsity"]))
    assert set(by_rev) == {"workspace", "HEAD~1"} and len(by_rev["HEAD~1"]) == len(by_rev["workspace"]) > 3
    assert statistics.mean(by_rev["workspace"]) > statistics.mean(by_rev["HEAD~1"]) + 10
    dvc("plots", "diff", "HEAD~1", "-o", "plots_html", cwd=repo)
    page = (repo / "plots_html/index.html").read_text()
    assert "Per-layer sparsity" in page and "accuracy_vs_size.png" in page

    # changing it back restores the earlier outputs from the run-cache, without running prune
    set_params(repo, {"prune": {"ratio": 0.5}})
    out = dvc("repro", cwd=repo).stdout
    assert "Stage 'prune' is cached - skipping run, checking out outputs" in out
    assert "prune" not in ran(out)
    assert md5(repo / "models/pruned.pt") == pruned_at_05
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout


@pytest.mark.slow
def test_failed_stage_exits_2_and_keeps_outputs(reproduced, tmp_path):
    repo = copy_project(reproduced[0], tmp_path / "repo")
    before = md5(repo / "models/pruned.pt")
    set_params(repo, {"prune": {"ratio": 1.5}})
    proc = dvc("repro", "prune", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "error: prune.ratio: must be in [0, 1), got 1.5" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    # dvc removes a stage's outs before running it; fixing the param restores them from the
    # run-cache without running anything
    set_params(repo, {"prune": {"ratio": 0.5}})
    out = dvc("repro", "prune", cwd=repo).stdout
    assert "skipping run" in out and not ran(out)
    assert md5(repo / "models/pruned.pt") == before
    assert UP_TO_DATE in dvc("status", "prune", cwd=repo).stdout


@pytest.mark.slow
def test_structured_iterative_prune_runs_through_every_stage(reproduced, tmp_path):
    """Channel-pruned models (new shapes) fine-tune, quantize, export and benchmark like any other."""
    repo = copy_project(reproduced[0], tmp_path / "repo")
    set_params(repo, {"prune": {"method": "structured", "ratio": 0.5, "schedule": "iterative", "steps": 2,
                                "step_epochs": 1},
                      "quantize": {"formats": ["fp32", "int8_static", "int8_qat", "fixed4"]}})
    assert ran(dvc("repro", cwd=repo).stdout) == STAGES[2:]  # the baseline is reused
    prune = json.loads((repo / "metrics/prune.json").read_text())
    assert prune["policy"] == "block-internal" and prune["macs_ratio"] < 0.8 and prune["sparsity"] == 0
    bench = json.loads((repo / "metrics/benchmark.json").read_text())["variants"]
    assert set(bench) == VARIANTS | {"int8_qat"}  # QAT through dvc, on a channel-pruned model
    assert bench["finetuned"]["params"] < bench["baseline"]["params"]
    assert bench["ort_int8"]["macs"] == bench["finetuned"]["macs"] < bench["baseline"]["macs"]
    assert json.loads((repo / "metrics/export.json").read_text())["onnx"]["top1_agreement"] == 100.0


@pytest.mark.slow
def test_ratio_sweep_branches_adding_a_ratio_runs_only_its_branch(reproduced, tmp_path):
    """prune.ratios expands into one cached branch per ratio; the merge stage joins them."""
    repo = copy_project(reproduced[0], tmp_path / "repo")
    # branches build two of the main chain's three quantize formats and export nothing
    set_params(repo, {"prune": {"ratios": [0.6]}, "quantize": {"sweep_formats": ["fp32", "fixed4"]},
                      "export": {"sweep_formats": []}})
    branch = ["sweep_prune", "sweep_finetune", "sweep_quantize", "sweep_export", "sweep_benchmark"]
    # the main chain is untouched: only the new branch and the merge stage run
    assert sorted(ran(dvc("repro", cwd=repo).stdout)) == sorted([f"{s}@0.6" for s in branch] + ["sweep"])
    sweep = json.loads((repo / "metrics/sweep.json").read_text())
    assert sweep["ratios"] == [0.6] and "0/baseline" in sweep["branches"]
    assert sweep["branches"]["0.6/fp32"]["sparsity"] == pytest.approx(60, abs=0.5)
    tuned = json.loads((repo / "sweeps/0.6/metrics/finetune.json").read_text())
    assert (tuned["epochs"], tuned["lr"]) == (2, 0.02)  # table row 2
    branch_rows = json.loads((repo / "sweeps/0.6/metrics/benchmark.json").read_text())["variants"]
    assert set(branch_rows) == {"pruned", "finetuned", "fp32", "fixed4"}
    assert "int8_static" in json.loads((repo / "metrics/benchmark.json").read_text())["variants"]
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "one ratio", cwd=repo)

    # adding a ratio runs exactly the new branch plus the merge stage
    set_params(repo, {"prune": {"ratios": [0.3, 0.6]}})
    assert sorted(ran(dvc("repro", cwd=repo).stdout)) == sorted([f"{s}@0.3" for s in branch] + ["sweep"])
    sweep = json.loads((repo / "metrics/sweep.json").read_text())
    assert sweep["ratios"] == [0.3, 0.6] and "0.3/fixed4" in sweep["branches"]
    assert sweep["branches"]["0.3/pruned"]["sparsity"] == pytest.approx(30, abs=0.5)
    tuned = json.loads((repo / "sweeps/0.3/metrics/finetune.json").read_text())
    assert (tuned["epochs"], tuned["lr"]) == (1, 0.005)  # table row 1
    assert (repo / "reports/sweep/accuracy_vs_ratio_and_size.png").stat().st_size > 10_000
    summary = (repo / "reports/sweep/summary.md").read_text()
    assert "| 0.3 | fixed4 |" in summary and "| 0 | baseline |" in summary
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout
    shown = json.loads(dvc("metrics", "show", "--json", cwd=repo).stdout)
    assert any("sweeps/0.3/metrics/benchmark.json" in json.dumps(v) for v in shown.values())
