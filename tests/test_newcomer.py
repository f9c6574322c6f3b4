"""A newcomer's first hour (issue 33): experiments readable in a terminal, metrics diffs without
timing noise, grids named by their values, smoke studies that leave git clean and say what they are,
and a damaged manifest named in one line (issue 32)."""
import json
import re
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, copy_project, dvc, run

sys.path.insert(0, str(ROOT / "src"))

MAIN_STAGES = {"variants", "report", *(f"{s}@main" for s in ("prune", "finetune", "quantize", "export", "benchmark"))}


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w@.-]+)'", output))


@pytest.mark.slow
def test_a_rerun_changes_no_accuracy_row_and_an_experiment_reads_in_160_columns(reproduced, tmp_path):
    repo = copy_project(reproduced[0], tmp_path / "repo")
    assert {p.stem for p in (repo / "timings/main").iterdir()} == {p.stem for p in (repo / "metrics/main").iterdir()}
    assert set(json.loads((repo / "timings/main/fp32.json").read_text())) == {"ms_b1", "ips_b8"}

    # the same artifacts measured again: only timing rows change
    dvc("repro", "-f", "-s", "benchmark@main", cwd=repo)
    assert json.loads(dvc("metrics", "diff", "--targets", "metrics", "-R", "--json", cwd=repo).stdout) == {}
    changed = json.loads(dvc("metrics", "diff", "--json", cwd=repo).stdout)
    assert all(path.startswith("timings/main/") for path in changed), changed

    # one experiment re-runs main's own stages only; tools/exps.py shows it beside the commit
    assert ran(dvc("exp", "run", "-S", "prune.ratio=0.7", cwd=repo).stdout) <= MAIN_STAGES
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)  # still JSON, for the VS Code extension
    assert "timings/main/fp32.json" in shown[0]["data"]["metrics"]
    table = run([sys.executable, str(ROOT / "tools/exps.py")], cwd=repo).stdout.splitlines()
    assert max(map(len, table)) <= 160, "\n".join(table)
    top1 = json.loads((repo / "metrics/main/fp32.json").read_text())["top1"]  # the experiment's, applied
    assert any("prune.ratio=0.7" in line and line.startswith("workspace, ") for line in table), table
    assert any("prune.ratio=0.5" in line for line in table), table  # the commit it started from
    assert any("main/fp32" in line and f"{top1:.2f}" in line and " 70.0 " in line for line in table), table

    # the Pareto table lists the workspace and the experiment it holds once, not twice
    pareto = run([sys.executable, str(ROOT / "tools/pareto.py")], cwd=repo).stdout.splitlines()[2:]
    cells = [tuple(c.strip() for c in line.split("|")[1:-1]) for line in pareto]
    assert len({c[1:] for c in cells}) == len(cells) and {c[3] for c in cells} == {"0.5", "0.7"}, pareto
    assert {c[0] for c in cells if c[3] == "0.7"} == {next(c[0] for c in cells if c[3] == "0.7")}
    assert next(c[0] for c in cells if c[3] == "0.7").startswith("workspace, ")


DAMAGE = {  # manifest -> its damaged text, the words the one-line error must hold
    "truncated": ("quantized", lambda text: text[: len(text) // 2], "not valid JSON"),
    "a list": ("quantized", lambda text: "[1, 2]", "expected a mapping of artifact name -> entry, got list"),
    "no file": ("quantized", lambda text: '{"fp32": {"type": "fp32"}}', "entry 'fp32' needs 'file'"),
    "a string entry": ("quantized", lambda text: '{"fp32": "fp32.pt"}', "entry 'fp32' must be a mapping"),
    "a path outside": ("exported", lambda text: '{"onnx": {"file": "../../../models/baseline.pt"}}', "needs 'file'"),
    "a missing file": ("exported", lambda text: '{"onnx": {"file": "gone.onnx"}}', "names gone.onnx, which is missing"),
    "deleted": ("exported", lambda text: None, "manifest.json: missing"),
}


@pytest.mark.slow
def test_benchmark_names_a_damaged_manifest_in_one_line(reproduced, tmp_path, monkeypatch):
    repo = copy_project(reproduced[0], tmp_path / "repo")
    monkeypatch.setenv("PYTHONPATH", str(repo / "src"))
    for case, (sub, damage, words) in DAMAGE.items():
        manifest = repo / "variants/main" / sub / "manifest.json"
        good = manifest.read_text()
        manifest.unlink()  # never write through a link into the DVC cache
        if damage(good) is not None:
            manifest.write_text(damage(good))
        proc = run([sys.executable, "stages/benchmark.py", "main"], cwd=repo, check=False)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, (case, err)
        assert err.startswith(f"error: variants/main/{sub}/manifest.json: ") and words in err, (case, err)
        manifest.unlink(missing_ok=True)
        manifest.write_text(good)


def variants_tool(tmp_path, *args):
    return subprocess.run([sys.executable, str(ROOT / "tools/variants.py"), "--params", str(tmp_path / "params.yaml"),
                           *args], capture_output=True, text=True)


def test_a_grid_is_named_by_its_values_and_skips_a_point_that_is_main(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    proc = variants_tool(tmp_path, "grid", "ratio", "prune.ratio=0.3,0.5,0.7")
    assert proc.returncode == 0, proc.stderr
    assert list(yaml.safe_load((tmp_path / "params.yaml").read_text())["variants"]) == ["main", "ratio-0.3", "ratio-0.7"]
    assert "note: ratio-0.5 resolves like variant main" in proc.stdout  # the base ratio: main's own work
    assert "dvc status" in proc.stdout  # what to run instead of a dry run that cannot plan a new variant


def test_smoke_outputs_are_git_ignored_but_their_lock_and_inputs_are_not():
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT).returncode == 0

    for folder in sorted(ROOT.glob("studies/*/smoke")):
        rel = folder.relative_to(ROOT)
        for out in ("results.md", "results.csv", "metrics/study.json", "timings/dense/fp32.json", "plots/study.csv",
                    "variants/dense/pruned.pt", "data/.gitignore", "models/baseline.pt", "figures/a.png", ".gitignore"):
            assert ignored(f"{rel}/{out}"), f"{rel}/{out}"
        for kept in ("dvc.lock", "dvc.yaml", "params.yaml", "place.yaml", ""):  # DVC refuses an ignored lock or folder
            assert not ignored(f"{rel}/{kept}"), f"{rel}/{kept}"
    assert not ignored("studies/deploy-cpu/cpu/results.md")


def test_smoke_results_say_the_numbers_are_plumbing_only(tmp_path, monkeypatch):
    from cnn_compress.studies import registry
    from cnn_compress.studies.common import scale_note

    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / "data/prepared/meta.json").write_text(json.dumps({"split_sizes": {"train": 220, "val": 20, "test": 60}}))
    monkeypatch.chdir(tmp_path)
    smoke, cpu = type("Cfg", (), {"scale": "smoke"})(), type("Cfg", (), {"scale": "cpu"})()
    assert scale_note(cpu) == []
    (note,) = scale_note(smoke)
    assert "plumbing only" in note and "60 test images" in note
    for name in registry.known():  # every study's results.md writer puts it under the title
        package = ROOT / "src/cnn_compress/studies" / name
        assert any("*scale_note(cfg)" in f.read_text() for f in package.rglob("*.py")), name


def test_fixed_point_ablation_says_which_drops_are_close_only_by_points():
    """The committed cpu numbers of `wa_mse`: a 7.00 worst factor (0.12 points apart at 6 bits) beside
    `close: yes` now says that three drops are close only by the points rule."""
    import pandas as pd

    from cnn_compress.core.config import parse_section
    from cnn_compress.studies.pruning_fixed_point_resnet20 import FixedPointStudyConfig, Rows, ablation, artifact

    cfg = parse_section(FixedPointStudyConfig, {"setting": "wa_mse", "settings": {"wa_mse": {"activations": True}},
                                                "bits": [6, 5, 4]})
    ours = {(6, "asymmetric"): -0.05, (6, "symmetric"): 0.38, (5, "asymmetric"): 0.34, (5, "symmetric"): 1.26,
            (4, "asymmetric"): 2.37, (4, "symmetric"): 4.24}
    published = {6: (0.07, 0.17), 5: (0.38, 0.80), 4: (1.78, 6.19)}
    rows = Rows([])
    rows.rows = {"dense": {artifact("wa_mse", b, s): {"top1": 90.0 - d} for (b, s), d in ours.items()}}
    pub = pd.DataFrame([{"nbits": b, "asymmetric_acc": (90.0 - a) / 100, "symmetric_acc": (90.0 - s) / 100}
                        for b, (a, s) in published.items()])
    row = ablation(rows, cfg, pub, 90.0, 90.0).set_index("setting").loc["wa_mse"]
    assert row["worst factor 4-6 bits"] == 7.0
    assert row["close 4-6 bits"] == "yes, 3 within 0.5 pts"


def test_every_metric_key_is_defined_in_the_readme():
    from cnn_compress.measure.benchmark import headline, timing_headline

    row = {"top1": 1, "top5": 1, "sparsity": 0, "params_nonzero": 1, "macs": 1, "size_bytes": 1,
           "size_compressed_bytes": 1, "latency_ms_b1_median": 1.0, "throughput_b64": 1.0}
    compare = (ROOT / "README.md").read_text().split("## Compare", 1)[1].split("\n## ", 1)[0]
    for key in [*headline(row), *(re.sub(r"\d+$", "<N>", k) for k in timing_headline(row, (1, 64)))]:
        assert f"`{key}`" in compare, key
    assert "`mparams`" not in compare  # nonzero params: the name says so
