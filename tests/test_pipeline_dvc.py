"""The DAG driven by the real ``dvc`` CLI in a throw-away git repo, with tiny settings."""
import hashlib
import json
import re
import statistics

import pytest
from conftest import copy_project, dvc, git, set_params, set_variants

MAIN = ["prune@main", "finetune@main", "quantize@main", "export@main", "benchmark@main"]
STAGES = ["prepare", "train", "sensitivity", "baseline", "variants", *MAIN, "report"]
ARTIFACTS = {"pruned", "finetuned", "fp32", "int8_static", "fixed4", "onnx", "ort_int8"}
UP_TO_DATE = "Data and pipelines are up to date."


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@.-]+)'", output)


def variant_stages(name: str, *stages: str) -> list[str]:
    return [f"{s}@{name}" for s in stages or ("prune", "finetune", "quantize", "export", "benchmark")]


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def metric(repo, variant: str, artifact: str) -> dict:
    return json.loads((repo / "metrics" / variant / f"{artifact}.json").read_text())


@pytest.mark.slow
def test_repro_from_scratch_runs_every_stage_and_writes_every_output(reproduced):
    repo, out = reproduced
    assert sorted(ran(out)) == sorted(STAGES)
    assert ran(out).index("train") < ran(out).index("prune@main") < ran(out).index("report")
    details = json.loads((repo / "variants/main/benchmark.json").read_text())
    assert set(details["artifacts"]) == ARTIFACTS
    for name, row in details["artifacts"].items():
        for key in ("top1", "top5", "loss", "params", "params_nonzero", "macs", "sparsity", "size_bytes",
                    "latency_ms_b1_median", "latency_ms_b1_p90", "throughput_b8", "runtime", "size_zlib_bytes",
                    "size_compressed_bytes", "weights_dense_bytes", "compression_ratio", "stats_from"):
            assert key in row, (name, key)
        assert row["stats_from"] != "finetuned.pt" or name == "finetuned"  # counted from the artifact itself
    assert details["machine"]["threads"] == 1 and details["machine"]["torch"]
    # dvc metrics show: one narrow row per artifact (a 120-column terminal)
    assert {p.stem for p in (repo / "metrics/main").iterdir()} == ARTIFACTS
    assert set(metric(repo, "main", "fp32")) == {"top1", "top5", "sparsity", "mparams_nz", "mmacs", "kib", "ccz_kib"}
    assert set(json.loads((repo / "timings/main/fp32.json").read_text())) == {"ms_b1", "ips_b8"}  # apart: noisy
    table = dvc("metrics", "show", cwd=repo).stdout
    assert max(len(line) for line in table.splitlines()) <= 120, table
    assert sorted(p.name for p in (repo / "reports/figures").iterdir()) == [
        "accuracy_vs_size.png", "latency.png", "sparsity.png", "training_curves.png"]  # one ratio: no ratio curve
    summary = (repo / "reports/summary.md").read_text()
    assert "| main      | ort_int8 " in summary and "| (trained) | baseline " in summary
    assert sorted(p.name for p in (repo / "variants/main/compressed").iterdir()) == sorted(f"{a}.ccz" for a in ARTIFACTS)
    checks = json.loads((repo / "variants/main/exported/checks.json").read_text())
    assert checks["onnx"]["top1_agreement"] == 100.0
    assert json.loads((repo / "variants/main/finetune.json").read_text())["lr"] == 0.005  # by_ratio row 1 (0.5)
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout


@pytest.mark.slow
def test_each_variant_reruns_only_itself(reproduced, tmp_path):
    """Adding, editing and inheriting: only the variants (and stages) whose resolved settings
    change run; train never does. The variant quantizes first and prunes after at its own ratio,
    and every figure reported for its artifacts is counted from the artifact (issue 14, defects 1-2)."""
    repo = copy_project(reproduced[0], tmp_path / "repo")
    aq = {"prune": {"order": "after_quantize", "ratio": 0.3}, "quantize": {"formats": ["fp32", "int8_static"]},
          "export": {"formats": []}}
    set_variants(repo, {"main": {}, "aq": aq})
    assert sorted(ran(dvc("repro", cwd=repo).stdout)) == sorted(["variants", *variant_stages("aq"), "report"])
    # pruned after quantization, at the variant's own ratio, and reported from each artifact
    assert metric(repo, "aq", "finetuned")["sparsity"] == 0
    assert metric(repo, "aq", "fp32")["sparsity"] == pytest.approx(30, abs=0.5)
    assert metric(repo, "aq", "int8_static")["sparsity"] == pytest.approx(30, abs=1.5)  # INT8 codes at zero
    assert metric(repo, "main", "int8_static")["sparsity"] == pytest.approx(50, abs=1.5)
    manifest = json.loads((repo / "variants/aq/quantized/manifest.json").read_text())
    assert manifest["fp32"]["pruned_after_quantize"] == pytest.approx(30, abs=0.5)

    # a base key the variant overrides: only main re-runs (the variant keeps its own ratio)
    set_params(repo, {"prune": {"ratio": 0.6}})
    assert sorted(ran(dvc("repro", cwd=repo).stdout)) == sorted(["variants", *variant_stages("main"), "report"])
    assert metric(repo, "aq", "fp32")["sparsity"] == pytest.approx(30, abs=0.5)
    assert json.loads((repo / "variants/main/finetune.json").read_text())["lr"] == 0.02  # by_ratio row 2

    # a base key both inherit (each variant's quantize and benchmark, nothing before them), and the
    # variant's own edit (with after_quantize the ratio is the quantize stage's: its prune and
    # finetune stay cached)
    set_params(repo, {"quantize": {"calib_per_class": 3, "formats": ["fp32", "int8_static", "fixed4"]}})
    set_variants(repo, {"main": {}, "aq": aq | {"prune": {"order": "after_quantize", "ratio": 0.4}}})
    expected = variant_stages("main", "quantize", "benchmark") + variant_stages("aq", "quantize", "benchmark")
    assert sorted(ran(dvc("repro", cwd=repo).stdout)) == sorted(["variants", *expected, "report"])
    assert metric(repo, "aq", "fp32")["sparsity"] == pytest.approx(40, abs=0.5)
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout
    summary = (repo / "reports/summary.md").read_text()
    assert "| aq        | int8_static " in summary and "| main      | fixed4 " in summary


@pytest.mark.slow
def test_ratio_change_metrics_diff_plots_and_run_cache(reproduced, tmp_path):
    repo = copy_project(reproduced[0], tmp_path / "repo")
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout  # a copy (like a clone + pull) is up to date
    pruned_at_05 = md5(repo / "variants/main/pruned.pt")

    # retraining with the same seed writes the same bytes: nothing downstream becomes stale
    baseline = md5(repo / "models/baseline.pt")
    assert ran(dvc("repro", "-f", "-s", "train", cwd=repo).stdout) == ["train"]
    assert md5(repo / "models/baseline.pt") == baseline
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout

    # a fine-tuning change re-runs from finetune: prune is not touched, nor export's predecessors
    set_params(repo, {"finetune": {"weight_decay": 0.001}})
    assert sorted(ran(dvc("repro", cwd=repo).stdout)) == sorted(
        ["variants", *variant_stages("main", "finetune", "quantize", "export", "benchmark"), "report"])

    # a ratio change re-runs prune and only what follows it
    set_params(repo, {"prune": {"ratio": 0.8}})
    assert sorted(ran(dvc("repro", cwd=repo).stdout)) == sorted(["variants", *MAIN, "report"])
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "ratio 0.8", cwd=repo)
    diff = json.loads(dvc("metrics", "diff", "HEAD~1", "--json", cwd=repo).stdout)
    assert diff["metrics/main/fp32.json"]["sparsity"]["old"] == pytest.approx(50, abs=0.5)
    assert diff["metrics/main/fp32.json"]["sparsity"]["new"] == pytest.approx(80, abs=0.5)
    ccz = diff["metrics/main/ort_int8.json"]["ccz_kib"]
    assert ccz["new"] < ccz["old"]  # sparse + entropy-coded INT8: the Deep Compression size
    assert "metrics/train.json" not in diff  # the baseline did not change
    table = dvc("metrics", "diff", "HEAD~1", cwd=repo).stdout.splitlines()
    assert len(table) > 5 and max(map(len, table)) <= 120  # readable in a 120-column terminal

    # plots diff overlays both commits' per-layer sparsity, as JSON and as the HTML page users open
    target = "variants/main/sparsity.csv"
    plots = json.loads(dvc("plots", "diff", "HEAD~1", "--json", "--targets", target, cwd=repo).stdout)
    by_rev: dict[str, list[float]] = {}
    for row in plots["data"][target][0]["content"]["data"]["values"]:
        by_rev.setdefault(row["rev"], []).append(float(row["sparsity"]))
    assert set(by_rev) == {"workspace", "HEAD~1"} and len(by_rev["HEAD~1"]) == len(by_rev["workspace"]) > 3
    assert statistics.mean(by_rev["workspace"]) > statistics.mean(by_rev["HEAD~1"]) + 10
    shown = dvc("plots", "show", "-o", "plots_html", cwd=repo)
    assert "failed to load" not in (shown.stdout + shown.stderr).lower()
    page = (repo / "plots_html/index.html").read_text()
    for title in ("Accuracy per artifact", "Latency per artifact", "Accuracy vs true compressed size",
                  "variants/main/sparsity.csv", "plots/train_curve.csv", "accuracy_vs_size.png", "heatmap.png"):
        assert title in page, title
    # every interactive plot has rows (a switched-off sensitivity stage says so in its one row), and the
    # artifacts table plots the sparsity measured per artifact, not a column against the row index
    every = json.loads(dvc("plots", "show", "--json", cwd=repo).stdout)["data"]
    rows = {name: [r for p in plot for r in p.get("content", {}).get("data", {}).get("values", [])]
            for name, plot in every.items()}
    assert all(rows[name] for name, plot in every.items() if "content" in plot[0]), rows.keys()
    assert [r["layer"] for r in rows["plots/sensitivity.csv"]] == ["(off: no ratios or bits set)"]
    spec = every["plots/artifacts.csv"][0]["content"]["encoding"]
    assert (spec["x"]["field"], spec["y"]["field"]) == ("sparsity", "label")
    assert {float(r["sparsity"]) > 40 for r in rows["plots/artifacts.csv"]} == {True, False}

    # changing it back restores the earlier outputs from the run-cache, without running prune
    set_params(repo, {"prune": {"ratio": 0.5}, "finetune": {"weight_decay": 0.0005}})
    out = dvc("repro", cwd=repo).stdout
    assert "Stage 'prune@main' is cached - skipping run, checking out outputs" in out
    assert "prune@main" not in ran(out)
    assert md5(repo / "variants/main/pruned.pt") == pruned_at_05
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout


@pytest.mark.slow
def test_failed_stage_exits_2_and_keeps_outputs(reproduced, tmp_path):
    repo = copy_project(reproduced[0], tmp_path / "repo")
    before = md5(repo / "variants/main/pruned.pt")
    set_variants(repo, {"main": {"prune": {"ratio": 1.5}}})
    proc = dvc("repro", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "error: variants.main.prune.ratio: must be in [0, 1), got 1.5" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    # the variant's stages never ran: its outputs are as they were
    assert md5(repo / "variants/main/pruned.pt") == before
    # fixing the param restores the configs from the run-cache without running anything else
    set_variants(repo, {"main": {}})
    out = dvc("repro", cwd=repo).stdout
    assert not [s for s in ran(out) if s != "variants"]
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout


@pytest.mark.slow
def test_structured_iterative_prune_runs_through_every_stage(reproduced, tmp_path):
    """Channel-pruned models (new shapes) fine-tune, quantize (QAT too), export and benchmark."""
    repo = copy_project(reproduced[0], tmp_path / "repo")
    set_variants(repo, {"main": {}, "structured": {
        "prune": {"method": "structured", "ratio": 0.5, "schedule": "iterative", "steps": 2, "step_epochs": 1},
        "quantize": {"formats": {"int8_qat": {"epochs": 1}}}, "export": {"formats": ["onnx"]}}})
    assert sorted(ran(dvc("repro", cwd=repo).stdout)) == sorted(["variants", *variant_stages("structured"), "report"])
    prune = json.loads((repo / "variants/structured/prune.json").read_text())
    assert prune["policy"] == "block-internal" and prune["macs_ratio"] < 0.8 and prune["sparsity"] == 0
    rows = json.loads((repo / "variants/structured/benchmark.json").read_text())["artifacts"]
    assert set(rows) == {"pruned", "finetuned", "int8_qat", "onnx"}
    base = json.loads((repo / "models/baseline.json").read_text())["artifacts"]["baseline"]
    assert rows["finetuned"]["params"] < base["params"]
    assert rows["onnx"]["macs"] == rows["finetuned"]["macs"] < base["macs"]  # counted from the ONNX graph
    assert rows["int8_qat"]["macs"] == rows["finetuned"]["macs"]  # and from the INT8 program
    checks = json.loads((repo / "variants/structured/exported/checks.json").read_text())
    assert checks["onnx"]["top1_agreement"] == 100.0
