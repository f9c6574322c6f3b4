"""Studies run through the real dvc CLI in their own folders: the smoke scale end to end, and the
larger scales validated and planned without running."""
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, dvc, git, make_project

from cnn_compress.core.config import load_section, parse_section, read_params
from cnn_compress.data.config import DataConfig
from cnn_compress.models.config import ModelConfig
from cnn_compress.studies import deploy  # noqa: F401  registers deploy-cpu
from cnn_compress.studies.registry import STUDIES
from cnn_compress.train.config import TrainConfig
from cnn_compress.variants.resolve import resolve_all

pytest.importorskip("openvino", reason="the deploy study times OpenVINO (the openvino extra)")

GRID_ROWS = {(rt, p) for rt in ("torch eager", "ONNX Runtime", "OpenVINO") for p in ("FP32", "INT8")}


def study_project(tmp_path: Path) -> Path:
    """The repository's pipeline plus its studies/ DVC project, in a fresh git repo."""
    repo = make_project(tmp_path / "repo")
    shutil.copytree(ROOT / "studies", repo / "studies", symlinks=True,
                    ignore=shutil.ignore_patterns("data", "models", "variants", "configs", "metrics", "plots",
                                                  "reports", "figures", "dvc.lock", "results.*", "tmp", "cache"))
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "studies", cwd=repo)
    return repo


@pytest.mark.slow
def test_deploy_study_smoke_writes_every_table(tmp_path):
    repo = study_project(tmp_path)
    folder = repo / "studies/deploy-cpu/smoke"
    assert "study@" not in dvc("stage", "list", cwd=repo).stdout  # the root pipeline has no study stage
    out = dvc("repro", "dvc.yaml", cwd=folder).stdout
    assert "Running stage 'study@deploy-cpu'" in out
    assert not (repo / "variants").exists()  # everything landed in the study folder
    text = (folder / "results.md").read_text()
    for heading in ("## Every artifact", "## Targets", "## Timing control", "## Peak and where the time goes",
                    "## The usual questions"):
        assert heading in text, heading
    frame = pd.read_csv(folder / "results.csv")
    params = yaml.safe_load((folder / "params.yaml").read_text())
    for variant in params["variants"]:
        cells = set(zip(frame[frame.variant == variant].runtime, frame[frame.variant == variant].precision, strict=True))
        assert cells == GRID_ROWS, variant  # eager / ORT / OpenVINO x FP32 / INT8 (compile is off at smoke)
    threads = params["study"]["deploy-cpu"]["threads"]
    assert all(f"ms_b1_t{t}" in frame and f"peak_pct_t{t}" in frame for t in threads)
    assert (frame.loc[frame.variant == "s50", "mmacs"] < frame.loc[frame.variant == "dense", "mmacs"].max()).all()
    assert "Unstructured sparsity** (`u50`" in text  # the question is answered from the u50 rows
    metrics = json.loads((folder / "metrics/study.json").read_text())
    assert {"dense_top1", "latency_target_met", "size_target_met", "controls_agree"} <= set(metrics)
    assert (folder / "figures/pareto_latency.png").stat().st_size > 1000
    shown = dvc("metrics", "show", cwd=folder).stdout
    assert "study.json" in shown
    again = dvc("repro", "dvc.yaml", cwd=folder).stdout
    assert "up to date" in again or not re.findall(r"Running stage", again)


def test_every_study_scale_validates_and_plans(tmp_path):
    """Each scale's params parse (the study's own section too) and dvc lists and plans every stage."""
    repo = study_project(tmp_path)
    folders = sorted(p.parent for p in (repo / "studies").glob("*/*/params.yaml"))
    assert folders
    for folder in folders:
        assert (folder / "dvc.yaml").is_symlink() and (folder / "dvc.yaml").resolve() == (repo / "dvc.yaml").resolve()
        params = read_params(folder / "params.yaml")
        for cls in (DataConfig, ModelConfig, TrainConfig):
            load_section(cls, params)
        resolve_all(params)  # every variant against the base sections, as the variants stage does
        for name, settings in params["study"].items():
            parse_section(STUDIES.meta(name)["config"], settings)
        # `dvc repro --dry` needs upstream outputs to exist; status plans a fresh folder: every stage
        stages = dvc("stage", "list", "dvc.yaml", cwd=folder).stdout
        plan = dvc("status", "dvc.yaml", cwd=folder).stdout
        for name in [*(f"study@{n}" for n in params["study"]), "train", *(f"finetune@{v}" for v in params["variants"])]:
            assert name in stages and f"{name}:" in plan, (folder, name)
