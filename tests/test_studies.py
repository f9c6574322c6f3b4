"""Studies run through the real dvc CLI in their own folders: the smoke scale end to end, and the
larger scales validated and planned without running."""
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, build_once, dvc, git, make_project, use_cache

from cnn_compress.core.config import load_section, parse_section, read_params
from cnn_compress.data.config import DataConfig
from cnn_compress.models.config import ModelConfig
from cnn_compress.studies import deploy_cpu  # noqa: F401  registers deploy_cpu
from cnn_compress.studies.registry import STUDIES, load
from cnn_compress.train.config import TrainConfig
from cnn_compress.variants.resolve import resolve_all

pytest.importorskip("openvino", reason="the deploy study times OpenVINO (the openvino extra)")

GRID_ROWS = {(rt, p) for rt in ("torch eager", "ONNX Runtime", "OpenVINO") for p in ("FP32", "INT8")}


def _study_base(repo: Path) -> str:
    """The repository's pipeline plus its studies/ DVC project, in a fresh git repo."""
    make_project(repo)
    shutil.copytree(ROOT / "studies", repo / "studies", symlinks=True,
                    ignore=shutil.ignore_patterns("data", "models", "variants", "configs", "metrics", "timings", "plots",
                                                  "reports", "figures", "dvc.lock", "results.*", "tmp", "cache"))
    (repo / "studies/.dvc/plots").symlink_to("../../.dvc/plots")  # the templates (the pattern above skipped the link)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "studies", cwd=repo)
    return ""


@pytest.fixture()
def study_project(tmp_path_factory, tmp_path, dvc_cache) -> Path:
    """A copy of the repository with its studies/ project (built once per test run), whose DVC cache is
    the run's shared one: the smokes with the same data, model and training (and benchmark and
    sensitivity settings) train once between them, the others restore those stages from the run-cache."""
    base, _ = build_once(tmp_path_factory, "study-base", _study_base)
    repo = shutil.copytree(base, tmp_path / "repo", symlinks=True)
    use_cache(repo / "studies/.dvc", dvc_cache)
    return repo


def only_pipeline(folder: Path) -> Path:
    """Leave ``folder`` the one pipeline of the studies project: every dvc command reads every
    dvc.yaml of its project (800 stages in 21 folders, ~5 s of YAML before a stage runs)."""
    for other in folder.parents[1].glob("*/*/dvc.yaml"):
        if other.parent != folder:
            other.unlink()
    return folder


def test_the_six_smokes_prepare_and_train_one_model():
    """Every smoke's data, model and train sections are the same, so in one test run the first smoke
    trains and the others restore its prepare and train stages from the shared run-cache."""
    sections = {folder.parent.name: {k: yaml.safe_load((folder / "params.yaml").read_text()).get(k)
                                     for k in ("data", "model", "train")}
                for folder in (ROOT / "studies").glob("*/smoke")}
    assert len(sections) == 6 and all(s == sections["deploy-cpu"] for s in sections.values()), sections
    assert sections["deploy-cpu"]["data"]["select_fraction"] > 0  # choices read `select`, tables `report`


@pytest.mark.slow
def test_deploy_study_smoke_writes_every_table(study_project):
    repo = study_project
    folder = only_pipeline(repo / "studies/deploy-cpu/smoke")
    assert "study@" not in dvc("stage", "list", cwd=repo).stdout  # the root pipeline has no study stage
    out = dvc("repro", "dvc.yaml", cwd=folder).stdout
    assert "Running stage 'study@deploy_cpu'" in out
    assert not (repo / "variants").exists()  # everything landed in the study folder
    text = (folder / "results.md").read_text()
    for heading in ("## Every artifact", "## Targets", "## Timing control", "## Peak and where the time goes",
                    "## The usual questions", "## Protocol: selection split, reference, anchors",
                    "## Cross-check with OpenVINO's benchmark_app"):
        assert heading in text, heading
    assert "made on `select`" in text and "**Reference.** `dense` got at least the fine-tuning budget" in text
    assert re.search(r"\| dense/openvino_int8 +\| dense anchor +\|", text)  # benchmark_app beside the harness
    frame = pd.read_csv(folder / "results.csv")
    params = yaml.safe_load((folder / "params.yaml").read_text())
    for variant in params["variants"]:
        cells = set(zip(frame[frame.variant == variant].runtime, frame[frame.variant == variant].precision, strict=True))
        fixed = {("torch eager", "4-bit W")} if variant == "s50" else set()  # its w4_tensor artifact
        assert cells == GRID_ROWS | fixed, variant  # eager / ORT / OpenVINO x FP32 / INT8 (compile is off at smoke)
    w4 = frame[(frame.variant == "s50") & (frame.artifact == "w4_tensor")].iloc[0]
    s50_fp32 = frame[(frame.variant == "s50") & (frame.artifact == "finetuned")].iloc[0]
    assert w4.ccz_kib < 0.5 * s50_fp32.ccz_kib  # 4-bit codes, not float32 values
    assert "`4-bit W`: float weights on an N-bit grid" in text
    assert "calls back to back for at least 20 ms" in text  # burst_ms's default
    threads = params["study"]["deploy_cpu"]["threads"]
    assert all(f"ms_b1_t{t}" in frame and f"peak_pct_t{t}" in frame for t in threads)
    assert (frame.loc[frame.variant == "s50", "mmacs"] < frame.loc[frame.variant == "dense", "mmacs"].max()).all()
    assert "Unstructured sparsity** (`u50`" in text  # the question is answered from the u50 rows
    depth = frame[frame.variant == "d50"]  # ResNet-8's one removable block gone: fewer MACs, no zeros
    assert (depth.method == "blocks").all() and (depth.mmacs < frame.loc[frame.variant == "dense", "mmacs"].max()).all()
    assert "Depth against width** " in text and "`d50` (blocks 0.5)" in text
    metrics = json.loads((folder / "metrics/study.json").read_text())
    assert {"dense_top1", "latency_target_met", "size_target_met", "controls_agree", "cross_check_agree"} <= set(metrics)
    assert (metrics["choice_split"], metrics["report_split"], metrics["reference_equal_budget"]) == ("select", "report", True)
    assert {"top1_select", "drop_select"} <= set(frame.columns)
    cross = text.split("## Cross-check with OpenVINO's benchmark_app")[1].split("\n## ")[0]
    header = next(line for line in cross.splitlines() if line.startswith("| artifact"))
    assert [c.strip() for c in header.strip("|").split("|")][-2:] == ["loop now", "cause"]
    loops = [float(line.split("|")[-3]) for line in cross.splitlines() if line.startswith("| dense/openvino_int8")]
    assert loops and all(v > 0 for v in loops)  # the harness's method timed around each benchmark_app run
    assert (folder / "figures/pareto_latency.png").stat().st_size > 1000
    shown = json.loads(dvc("metrics", "show", "-R", "metrics", "--json", cwd=folder).stdout)  # as studies/README.md says
    listed = {path for rev in shown.values() for path in rev["data"]}
    own = {str(p.relative_to(folder)) for p in (folder / "metrics").rglob("*.json")}
    assert "metrics/study.json" in listed and listed == own  # this folder's metrics, nothing from elsewhere
    cache = repo / "src/cnn_compress/core/__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "stale.cpython-311.pyc").write_bytes(b"\0" * 16)  # bytecode beside the library is not a dep
    again = dvc("repro", "dvc.yaml", cwd=folder).stdout
    assert "up to date" in again or not re.findall(r"Running stage", again)


def test_every_study_scale_validates_and_plans(study_project):
    """Each scale's params parse (the study's own section too) and dvc lists and plans every stage."""
    repo = study_project
    folders = sorted(p.parent for p in (repo / "studies").glob("*/*/params.yaml"))
    assert folders
    # `dvc repro --dry` needs upstream outputs to exist; status plans a fresh folder: every stage listed
    # as changed. One dvc for every folder (each named by its dvc.yaml), not one per folder (~2 s each).
    targets = [str(folder.relative_to(repo / "studies") / "dvc.yaml") for folder in folders]
    plan = json.loads(dvc("status", "--json", *targets, cwd=repo / "studies").stdout)
    stage_params = {p for stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values()
                    for p in (stage.get("do", stage).get("params") or []) if isinstance(p, str)}  # not `file: keys`
    for folder, target in zip(folders, targets, strict=True):
        assert (folder / "dvc.yaml").is_symlink() and (folder / "dvc.yaml").resolve() == (repo / "dvc.yaml").resolve()
        params = read_params(folder / "params.yaml")
        assert stage_params <= set(params), (folder, stage_params - set(params))  # dvc repro needs every one
        for cls in (DataConfig, ModelConfig, TrainConfig):
            load_section(cls, params)
        resolve_all(params)  # every variant against the base sections, as the variants stage does
        for name, settings in params["study"].items():
            load(name)
            parse_section(STUDIES.meta(name)["config"], settings)
        for name in [*(f"study@{n}" for n in params["study"]), "train", *(f"finetune@{v}" for v in params["variants"])]:
            assert f"{target}:{name}" in plan, (folder, name)


def _frame(rows):
    cols = ["variant", "artifact", "top1", "ms_b1_t1", "ips_b64_t1", "ccz_kib", "kib"]
    return pd.DataFrame([dict(zip(cols, r, strict=True)) for r in rows])


def test_deploy_comparisons_anchors_fronts_and_targets():
    """Speedups against the three dense anchors, Pareto fronts and targets from a known table."""
    from cnn_compress.studies.deploy_cpu import DeployConfig, add_comparisons, targets

    frame = _frame([
        ("dense", "finetuned", 90.0, 10.0, 100.0, 1000.0, 1100.0),
        ("dense", "ort_int8", 89.8, 4.0, 300.0, 300.0, 320.0),
        ("dense", "openvino_int8", 89.9, 2.0, 400.0, 280.0, 300.0),
        ("s50", "openvino_int8", 89.2, 0.9, 1100.0, 40.0, 150.0),   # within 1 point: meets all three
        ("s70", "openvino_int8", 85.0, 0.5, 2000.0, 20.0, 100.0),   # fastest, but loses 5 points
    ])
    cfg = DeployConfig(threads=(1,), batch_sizes=(1, 64))
    ref = add_comparisons(frame, cfg)
    assert ref == {"dense_top1": 90.0, "fp32_file_kib": 1100.0}
    s50 = frame[frame.variant == "s50"].iloc[0]
    assert s50["x_vs_eager FP32"] == pytest.approx(11.11) and s50["x_vs_OpenVINO INT8"] == pytest.approx(2.22)
    assert s50["drop"] == pytest.approx(0.8)
    assert frame.front_latency.tolist() == [True, False, True, True, True]  # ORT INT8: slower and less accurate
    goals = targets(frame, cfg, ref)
    assert goals["fastest"] == "s50/openvino_int8" and goals["latency_target_met"]
    assert goals["throughput_x_vs_ov_int8"] == pytest.approx(2.75) and goals["throughput_target_met"]
    assert goals["size_x_vs_fp32_file"] == pytest.approx(27.5) and goals["size_target_met"]
    assert targets(frame, DeployConfig(threads=(1,), max_drop=0.05), ref)["eligible"] == 1  # dense FP32 only
    assert (goals["fastest_overall"], goals["fastest_overall_drop"]) == ("s70/openvino_int8", 5.0)
    assert goals["fastest_overall_x_vs_ov_int8"] == pytest.approx(4.0)
    from cnn_compress.studies.deploy_cpu.report import finding
    assert finding(goals, ref).endswith("`s70/openvino_int8`, 4.00x dense OpenVINO INT8 at 5.00 points below dense FP32.")
    assert finding(goals, ref).startswith("within 1 point of dense FP32 (90.00%), `s50/openvino_int8`")
    wide = targets(frame, DeployConfig(threads=(1,), max_drop=5.0), ref)
    assert finding(wide, ref).startswith("within 5 points of dense FP32 (90.00%), `s70/openvino_int8`")
    none = targets(frame, DeployConfig(threads=(1,), max_drop=-1.0), ref)
    assert finding(none, ref).startswith("no artifact stays within the accuracy budget. Fastest at any accuracy: `s70")


def test_deploy_longer_finetuning_line_compares_the_same_pruning_only():
    """The results say what longer fine-tuning with distillation buys against the same pruned model."""
    from cnn_compress.studies.deploy_cpu.report import _longer_finetuning

    cols = ["variant", "runtime", "precision", "method", "ratio", "top1", "ft_epochs", "kd"]
    rows = [("d30", "torch eager", "FP32", "blocks", 0.3, 84.35, 2, 0.0),
            ("d30kd", "torch eager", "FP32", "blocks", 0.3, 86.10, 15, 0.5),
            ("d30kd", "OpenVINO", "INT8", "blocks", 0.3, 86.00, 15, 0.5),
            ("d50", "torch eager", "FP32", "blocks", 0.5, 83.02, 3, 0.0),
            ("s30", "torch eager", "FP32", "structured", 0.3, 86.31, 2, 0.0)]
    line = _longer_finetuning(pd.DataFrame(rows, columns=cols))
    assert line == ["- **Longer fine-tuning** (the same pruned model): `d30kd` (15 epochs, distillation weight 0.5) "
                    "against `d30` (2 epochs): top-1 86.10% against 84.35% (+1.75 points)."]
    assert _longer_finetuning(pd.DataFrame([rows[0], rows[3]], columns=cols)) == []


def test_deploy_grid_cells_add_compiled_runners_only_for_named_formats(tmp_path, monkeypatch):
    """`study.deploy_cpu.compile` adds torch.compile cells for the named quantize formats only, timed
    from the format's own file; a variant without benchmark results is a one-line error."""
    from cnn_compress.core.errors import UserError
    from cnn_compress.studies.deploy_cpu import collect_cells

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "variants" / "v"
    (root / "quantized").mkdir(parents=True)
    rows = {name: {"top1": 1.0} for name in ("finetuned", "fp32", "int8_static", "onnx")}
    (root / "benchmark.json").write_text(json.dumps({"artifacts": rows}))
    (root / "quantized" / "manifest.json").write_text(json.dumps({"fp32": {"file": "fp32.pt"},
                                                                  "int8_static": {"file": "int8_static.pt2"}}))
    cells = {c.name: c for c in collect_cells(["v"], ("fp32",))}
    assert set(cells) == {"finetuned", "int8_static", "fp32+compile"}  # onnx: no exported file, no cell
    assert cells["fp32+compile"].compile and cells["fp32+compile"].path == Path("variants/v/quantized/fp32.pt")
    assert not cells["int8_static"].compile and cells["fp32+compile"].key == "v/fp32+compile"
    assert {c.name for c in collect_cells(["v"], ())} == {"finetuned", "int8_static"}
    with pytest.raises(UserError, match="study: variant w has no benchmark results"):
        collect_cells(["w"], ())


def test_deploy_without_its_anchors_is_one_line():
    from cnn_compress.core.errors import UserError
    from cnn_compress.studies.deploy_cpu import DeployConfig, add_comparisons

    frame = _frame([("dense", "finetuned", 90.0, 10.0, 100.0, 1000.0, 1100.0)])
    with pytest.raises(UserError, match="lacks the anchor artifacts"):
        add_comparisons(frame, DeployConfig(threads=(1,)))


@pytest.mark.parametrize(("study", "message"), [
    ({"deploy_cpu": {"rounds": 1}}, "error: study.deploy_cpu.rounds: must be >= 3"),
    ({"pruning_fixed_point_resnet20": {"amp_batch": 1}}, "error: study.pruning_fixed_point_resnet20.amp_batch: must be >= 2"),
    ({"pruning_fixed_point_resnet20": {"amp_threads": 0}}, "error: study.pruning_fixed_point_resnet20.amp_threads: must be >= 1"),
    ({"deploy_cpu": {"treads": [1]}}, "error: study.deploy_cpu.treads: unknown key (did you mean 'threads'?)"),
    ({"deploy-gpu": {}}, "error: study.deploy-gpu: no such study (known: approx_compression_resnet18_mobilenetv2, deploy_cpu"),
    ({"pruning_quantization_resnet18_vgg16": {"table": "vgg19_summary"}},
     "error: study.pruning_quantization_resnet18_vgg16.table: must be one of resnet18_summary, vgg16bn_summary"),
    ({"approx_compression_resnet18_mobilenetv2": {"ratios": {30: "g30"}}},
     "error: study.approx_compression_resnet18_mobilenetv2.ratios: must hold 0 (the baseline) and 50"),
    ({"pruning_quantization_resnet18_vgg16": {"structured": "s30"}},
     "error: study.pruning_quantization_resnet18_vgg16.structured: 's30' is not a variant of this study folder"),
])
def test_bad_study_params_stop_with_one_line(tmp_path, study, message):
    import subprocess
    import sys

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"study": study, "variants": {"dense": {}}}))
    name = next(iter(study))
    proc = subprocess.run([sys.executable, str(ROOT / "stages/study.py"), name], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and proc.stderr.strip().startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


SHARED = Path(os.environ.get("CNN_COMPRESS_SHARED", ROOT.parent / "shared"))


def run_smoke(repo: Path, monkeypatch: pytest.MonkeyPatch, study: str) -> tuple[Path, pd.DataFrame, dict]:
    """Run ``studies/<study>/smoke`` through dvc in a fresh copy of the repository; returns its
    folder, its results.csv and the published study (skips without ../shared)."""
    source = SHARED / f"studies/{study}.yaml"
    if not source.is_file():
        pytest.skip(f"needs ../shared (or CNN_COMPRESS_SHARED): {SHARED} has no studies/")
    monkeypatch.setenv("CNN_COMPRESS_SHARED", str(SHARED))  # the copied repository has no ../shared beside it
    folder = only_pipeline(repo / f"studies/{study}/smoke")
    out = dvc("repro", "dvc.yaml", cwd=folder).stdout
    section = yaml.safe_load((folder / "params.yaml").read_text())["study"]
    assert all(f"Running stage 'study@{name}'" in out for name in section)
    return folder, pd.read_csv(folder / "results.csv"), yaml.safe_load(source.read_text())


@pytest.mark.slow
def test_fixed_point_study_smoke_produces_every_published_table(study_project, monkeypatch):
    """The smoke scale of study 004 writes each published table with the published rows and columns
    beside ours (structure only: tiny data says nothing about the figures)."""
    folder, frame, study = run_smoke(study_project, monkeypatch, "pruning-fixed-point-resnet20")
    published = {t["id"]: t for t in study["tables"]}
    for table_id in ("pruning_finetune", "quant_no_finetune", "asym_quant_finetune", "pruned_then_quantized"):
        ours = frame[frame.table == table_id]
        key = published[table_id]["columns"][0]
        assert {str(r[key]) for r in published[table_id]["rows"]} == set(ours.row.astype(str)), table_id
        pub_cols = {c for c in ours.column if c.endswith(" pub") and " drop " not in c}
        assert len(pub_cols) == len(published[table_id]["columns"]) - 1, (table_id, pub_cols)
        for column in pub_cols:  # every published column sits beside a measured one
            assert column.replace(" pub", " ours") in set(ours.column), column
        shown = sorted(round(float(v), 4) for v in ours[ours.column.isin(pub_cols)].value)
        scale = {c: 1.0 if c.endswith("loss") else 100.0 for c in published[table_id]["columns"][1:]}
        source = sorted(round(float(r[c]) * scale[c], 4) for r in published[table_id]["rows"] for c in scale)
        assert shown == source, table_id  # the published figures, transcribed unchanged (in percent)
        assert ours[ours.column.str.endswith(" ours")].value.notna().all(), table_id
    text = (folder / "results.md").read_text()
    for heading in ("(`pruning_finetune`", "(`quant_no_finetune`", "(`asym_quant_finetune`",
                    "(`pruned_then_quantized`", "## Which fixed-point setting", "## Published claims, checked"):
        assert heading in text, heading
    ablation = frame[frame.table == "ablation"]
    params = yaml.safe_load((folder / "params.yaml").read_text())["study"]["pruning_fixed_point_resnet20"]
    assert set(ablation.row) == {"published", *params["settings"]}
    metrics = json.loads((folder / "metrics/study.json").read_text())
    assert {"baseline_top1", "asym_above_sym_at_4_and_3_bits", "collapse_at_2_bits_without_ft", "closest_setting"} <= set(metrics)
    # the closest setting is judged on `select`, every table reports `report` (data.select_fraction)
    assert (metrics["choice_split"], metrics["report_split"], metrics["setting"]) == ("select", "report", "w_minmax")
    assert "**Splits.** Every accuracy in the tables is on `report`." in text and "on `select` the closest setting is" in text
    assert {"worst factor 4-6 bits, select", "in use"} <= set(ablation.column)
    assert "ResNet-8 (width 8) standing in for ResNet-20" in text.split("**Finding.**")[1].splitlines()[0]
    kd = frame[frame.table == "distillation"].pivot(index="row", columns="column", values="value")
    assert set(kd.index) == {"q3_asym", "q2_asym", "sparse80", "sparse80_q4_asym"}
    gains = kd.distilled.astype(float) - kd.plain.astype(float)
    assert (gains.round(2) == kd.gain.astype(float)).all() and {f"kd_gain_{k}" for k in kd.index} <= set(metrics)
    assert "## Fine-tuning with and without distillation" in text
    alloc = frame[frame.table == "allocation"].pivot(index="row", columns="column", values="value")
    assert set(alloc.index) == {"sparse_pruned", "sparse_finetuned", "q3_asym", "q4_asym"}
    assert {f"allocation_gain_{k}" for k in alloc.index} <= set(metrics) and "## Uniform against sensitivity" in text
    assert float(alloc.loc["q3_asym", "budget"].split()[1]) <= 3.0  # the mean width the quantize stage measured
    assert (folder / "sensitivity/heatmap.png").stat().st_size > 1000
    amp = frame[frame.table == "amp"].pivot(index="row", columns="column", values="value")
    assert list(amp.loc[params["amp_variants"], "amp"]) == ["off", "bf16"] and "amp_bf16_speed_vs_fp32" in metrics
    # the precisions also timed against each other in the study stage: FP32 is its own reference
    same = amp.loc[params["amp_variants"], "same_run_vs_first"].astype(float)
    assert same.iloc[0] == 1.0 and same.iloc[1] > 0 and metrics["amp_bf16_same_run_vs_fp32"] == same.iloc[1]
    lo, hi = map(float, amp.loc[params["amp_variants"][1], "same_run_interval"].split("-"))
    assert lo <= same.iloc[1] <= hi
    plot = pd.read_csv(folder / "plots/study.csv")
    assert {"series", "x", "top1"} <= set(plot.columns) and set(plot.x) == {6, 5, 4, 3, 2}
    assert (folder / "figures/accuracy_vs_bits.png").stat().st_size > 1000


@pytest.mark.slow
def test_structured_pruning_ptq_study_smoke_produces_every_published_table(study_project, monkeypatch):
    """Study 001 at smoke scale: every published table with its rows and columns beside ours, the
    published figures unchanged, latencies timed for every format row the folder built."""
    folder, frame, source = run_smoke(study_project, monkeypatch, "structured-pruning-ptq-resnet18")
    for table in source["tables"]:
        ours = frame[frame.table == table["id"]]
        keys = [c for c in table["columns"] if c in ("prune_pct", "format", "model", "training_precision")][:2]
        rows = {" / ".join(str(r[k]).split(" (TRT)")[0] for k in keys) for r in table["rows"]}
        assert rows <= {r.split(" (TRT)")[0] for r in ours.row.astype(str)}, table["id"]  # every published row
        for column in table["columns"][len(keys):]:
            shown = ours[ours.column == f"{column} pub"].dropna(subset=["value"])
            published_values = sorted(str(r[column]) for r in table["rows"] if r[column] is not None)
            assert sorted(_same(v) for v in shown.value) == sorted(_same(v) for v in published_values), (table["id"], column)
    measured = frame[frame.table.isin(["structured_pruning_sweep_c10", "ptq_resnet18_c10", "pruning_plus_ptq_resnet18_c10"])]
    params = yaml.safe_load((folder / "params.yaml").read_text())
    sweep = measured[(measured.table == "structured_pruning_sweep_c10") & (measured.column == "acc_after_ft_pct ours")]
    assert sweep.value.notna().sum() == len(params["variants"]) - 2  # one per variant but the two AMP runs
    ptq = measured[(measured.table == "ptq_resnet18_c10") & (measured.column == "inference_ms_per_image ours")]
    assert {"FP32", "FP16", "INT8"} <= set(ptq.dropna(subset=["value"]).row)  # timed from the artifacts
    amp = frame[frame.table == "amp_vs_fp32_training"].pivot(index="row", columns="column", values="value")
    assert set(amp.index) == {"AMP", "FP32"} and amp["test_acc_pct ours"].notna().all()
    assert list(amp.loc[["AMP", "FP32"], "amp"]) == ["bf16", "off"] and float(amp.loc["FP32", "speed_vs_fp32"]) == 1
    text = (folder / "results.md").read_text()
    assert "## Published claims, checked" in text and "**Finding.** ResNet-8 (width 8) standing in for ResNet-18:" in text
    metrics = json.loads((folder / "metrics/study.json").read_text())
    assert {"baseline_top1", "ft_recovers_at_every_ratio", "int8_faster_than_fp32", "amp_within_0_5_point_of_fp32",
            "amp_training_faster_than_fp32"} <= set(metrics)
    assert (folder / "figures/accuracy_latency_vs_ratio.png").stat().st_size > 1000


def _same(value):
    """A cell as a comparable number (published figures round-trip through the CSV) or text."""
    try:
        return round(float(value), 6)
    except (TypeError, ValueError):
        return str(value)


@pytest.mark.slow
def test_pruning_quantization_study_smoke_produces_the_published_table(study_project, monkeypatch):
    """Study 002 at smoke scale: the ResNet-18 summary with every published row and column beside ours,
    our pruning x format grid, the shape checks, metrics and plots."""
    folder, frame, source = run_smoke(study_project, monkeypatch, "pruning-quantization-resnet18-vgg16")
    published = next(t for t in source["tables"] if t["id"] == "resnet18_summary")
    ours = frame[frame.table == "resnet18_summary"]
    assert {r["model"] for r in published["rows"]} == set(ours.row)
    for column in published["columns"][1:]:
        assert f"{column} pub" in set(ours.column), column
    shown = ours[ours.column == "accuracy_pct pub"].set_index("row").value.astype(float)
    assert all(shown[r["model"]] == r["accuracy_pct"] for r in published["rows"])  # transcribed unchanged
    assert ours[ours.column == "accuracy_pct ours"].value.notna().all()
    grid = frame[frame.table == "grid"]
    eager = {f"{p} / {f} / eager" for p in ("none", "structured", "unstructured")
             for f in ("FP32", "dynamic INT8", "static INT8", "QAT INT8")}
    compiled = {f"{p} / {f} / compiled" for p in ("none", "structured", "unstructured") for f in ("FP32", "static INT8")}
    assert set(grid.row) == eager | compiled  # study.compile: [finetuned, int8_static]
    metrics = json.loads((folder / "metrics/study.json").read_text())
    assert {"static_int8_about_4x_smaller", "unstructured_no_speedup", "none_int8_static_speedup",
            "none_int8_static_compiled_speedup", "static_int8_compiled_faster_than_fp32_compiled"} <= set(metrics)
    text = (folder / "results.md").read_text()
    assert "**Finding.**" in text
    heading = next(line for line in text.splitlines() if line.startswith("## Every pruning x format (ours"))
    assert "standing in for ResNet-18" in heading  # the smoke model is named as a stand-in wherever its rows appear
    plot = pd.read_csv(folder / "plots/study.csv")
    assert len(plot) == 18 and {"label", "x", "top1"} <= set(plot.columns)
    assert (folder / "figures/accuracy_vs_latency_size.png").stat().st_size > 1000


@pytest.mark.slow
def test_approx_compression_study_smoke_produces_the_published_tables(study_project, monkeypatch):
    """Study 000 at smoke scale (group resnet18_c10): its four published tables with every published row
    beside ours, the ratio sweep, the shape checks and the plots."""
    folder, frame, source = run_smoke(study_project, monkeypatch, "approx-compression-resnet18-mobilenetv2")
    source = {t["id"]: t for t in source["tables"]}
    for table_id in ("resnet18_c10_ratio_sweep", "resnet18_c10_accuracy", "resnet18_c10_int8_effect",
                     "resnet18_c10_ratio_sweep_cost"):
        ours, pub = frame[frame.table == table_id], source[table_id]
        assert {str(r[pub["columns"][0]]) for r in pub["rows"]} == set(ours.row.astype(str)), table_id
        for column in pub["columns"][1:]:
            if column != "prune_ratio_pct":
                assert {f"{column} pub", f"{column} ours"} <= set(ours.column), (table_id, column)
        assert ours[ours.column.str.endswith(" ours")].value.notna().all(), table_id
    sweep = frame[frame.table == "sweep"]
    assert {"0 / finetuned", "30 / finetuned", "50 / finetuned", "70 / finetuned", "50 / int8_dynamic"} == set(sweep.row)
    metrics = json.loads((folder / "metrics/study.json").read_text())
    assert {"size_unchanged_by_unstructured_pruning", "dynamic_int8_keeps_accuracy", "acc_70"} <= set(metrics)
    assert metrics["size_unchanged_by_unstructured_pruning"]  # dense tensors: same file at every ratio
    assert "**Finding.**" in (folder / "results.md").read_text()
    assert set(pd.read_csv(folder / "plots/study.csv").x) == {0, 30, 50, 70}


@pytest.mark.slow
def test_mixed_precision_pruning_study_smoke_produces_every_published_table(study_project, monkeypatch):
    """Study 003 at smoke scale: each published table (CPU and GPU rows) with our CPU row beside it."""
    folder, frame, source = run_smoke(study_project, monkeypatch, "mixed-precision-pruning-resnet18-imagenet")
    for table in source["tables"]:
        ours = frame[frame.table == table["id"]]
        assert set(ours.row) == {"CPU", "GPU"}, table["id"]
        for column in table["columns"][1:]:
            assert {f"{column} pub", f"{column} ours"} <= set(ours.column), (table["id"], column)
        cpu = ours[(ours.row == "CPU") & ours.column.str.endswith(" ours")]
        assert cpu.value.notna().all(), table["id"]
    mine = frame[frame.table == "ours"].pivot(index="row", columns="column", values="value")
    assert float(mine.loc["int8_pruned", "sparsity"]) > 20  # pruned after quantization, measured on the artifact
    metrics = json.loads((folder / "metrics/study.json").read_text())
    assert {"int8_about_4x_smaller", "pruning_alone_keeps_size", "int8_pruned_top5"} <= set(metrics)


def test_deploy_grid_compiles_every_model_of_one_architecture():
    """With inductor freezing (as the runners compile) every model is guarded by its weights' ids,
    so models of one class recompile one shared ``forward``: past dynamo's limit (8) the rest
    would run eagerly while the grid labels them torch.compile. The study raises the limit."""
    import torch
    import torch._dynamo
    import torch._inductor.config as inductor

    from cnn_compress.studies.deploy_cpu import allow_recompiles

    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    models = [torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
              for _ in range(12)]
    freezing, limit = inductor.freezing, torch._dynamo.config.recompile_limit
    torch._dynamo.reset()
    try:
        inductor.freezing = True
        allow_recompiles(len(models))
        with torch.no_grad():
            for m in models:
                torch.compile(m, backend=counting)(torch.randn(1, 3, 8, 8))
        assert len(graphs) == len(models)  # every model traced, none left to run eagerly (8 without the fix)
    finally:
        inductor.freezing, torch._dynamo.config.recompile_limit = freezing, limit
        torch._dynamo.reset()


def test_fixed_point_artifacts_get_rows_named_by_their_width(tmp_path, monkeypatch):
    """The deploy study's N-bit rows come from the quantize manifest: mean width, W or W+A."""
    from cnn_compress.studies.deploy_cpu import fixed_point_cells

    monkeypatch.chdir(tmp_path)
    assert fixed_point_cells("v") == {}  # no quantize stage output: no rows, no error
    folder = tmp_path / "variants/v/quantized"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({
        "fp32": {"type": "fp32", "describe": "fp32"},
        "w4": {"type": "fixed", "describe": "4-bit sym, per-tensor, weights only", "bits": 4, "mean_bits": 4.0},
        "mixed": {"type": "fixed", "describe": "mixed 3-4-bit sym, per-channel, w+a", "bits": 4, "mean_bits": 3.5},
        "old": {"type": "fixed", "describe": "fixed"}}))
    assert fixed_point_cells("v") == {"w4": ("torch eager", "4-bit W"), "mixed": ("torch eager", "3.5-bit W+A"),
                                      "old": ("torch eager", "N-bit W")}
