"""Your own model (issue 34): `model.arch: "module:callable"` and `torchvision:<name>` through the real
pipeline, the checkpoint that rebuilds itself from its import path, a source edit that re-runs train,
and one line for each mistake a user makes."""
import itertools
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, build_once, copy_project, dvc, git, make_project, run

from cnn_compress.core.errors import ConfigError, UnsupportedFormatError
from cnn_compress.models import user
from cnn_compress.models.config import ModelConfig
from cnn_compress.models.zoo import build_model, head_names
from cnn_compress.prune.config import PruneConfig
from cnn_compress.prune.pruning import PruneContext, prune_model

MAIN_ARTIFACTS = {"pruned", "finetuned", "fp32", "fp16", "int8_dynamic", "int8_static", "int8_mixed", "int8_qat",
                  "fixed4", "onnx", "ort_int8", "openvino_fp32", "openvino_int8"}


def _with_examples(dest: Path) -> Path:
    repo = make_project(dest)
    shutil.copytree(ROOT / "examples", repo / "examples", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "data", "models", "variants", "configs", "metrics",
                                                  "timings", "plots", "reports", "dvc.lock", "tmp", "cache"))
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "examples", cwd=repo)
    return repo


def _reproduce_example(repo: Path) -> str:
    _with_examples(repo)
    out = dvc("repro", "dvc.yaml", cwd=repo / "examples/own-model")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "reproduced", cwd=repo)
    return out.stdout + out.stderr


@pytest.fixture(scope="session")
def example(tmp_path_factory) -> tuple[Path, str]:
    """examples/own-model reproduced once per test run with the real dvc, as CI runs it (all xdist
    workers: a module fixture built it on both, ~3 CPU-minutes twice)."""
    pytest.importorskip("openvino", reason="the example exports OpenVINO IR (the openvino extra)")
    repo, log = build_once(tmp_path_factory, "own-model-example", _reproduce_example)
    return repo / "examples/own-model", log


@pytest.mark.slow
def test_example_runs_every_stage_and_measures_every_artifact(example):
    folder, log = example
    params = yaml.safe_load((folder / "params.yaml").read_text())
    stages = ["prepare", "train", "baseline", "variants", "report"]
    stages += [f"{s}@{v}" for s, v in itertools.product(("prune", "finetune", "quantize", "export", "benchmark"),
                                                        params["variants"])]
    for stage in stages:
        assert f"Running stage '{stage}'" in log, stage
    baseline = json.loads((folder / "metrics/baseline.json").read_text())
    assert baseline["top1"] > 40, baseline  # a real classifier, not chance (10%)
    rows = {v: json.loads((folder / f"variants/{v}/benchmark.json").read_text())["artifacts"] for v in params["variants"]}
    assert set(rows["main"]) >= MAIN_ARTIFACTS  # every quantization format and every export
    for variant, artifacts in rows.items():
        for name, row in artifacts.items():
            shown = json.loads((folder / f"metrics/{variant}/{name}.json").read_text())
            for key in ("top1", "kib", "ccz_kib", "mmacs"):
                assert shown.get(key) is not None, (variant, name, key)
            assert row["latency_ms_b1_median"] > 0 and row["size_compressed_bytes"] > 0, (variant, name)
            floor = 25 if variant == "channels" else 30  # a 4k-parameter model left with 30% of its MACs
            if name != "pruned":  # measured before fine-tuning: channel pruning leaves it near chance
                assert row["top1"] > floor, (variant, name, row["top1"])  # no artifact broken (chance: 10%)
    finetuned = rows["main"]["finetuned"]["top1"]
    for name in MAIN_ARTIFACTS - {"pruned", "fixed4"}:  # same weights, other formats and runtimes
        assert abs(rows["main"][name]["top1"] - finetuned) < 3, (name, rows["main"][name]["top1"], finetuned)
    checks = json.loads((folder / "variants/main/exported/checks.json").read_text())
    assert checks["onnx"]["top1_agreement"] > 99 and checks["openvino_fp32"]["top1_agreement"] > 99
    manifest = json.loads((folder / "variants/main/quantized/manifest.json").read_text())
    assert manifest["int8_mixed"]["float_modules"] == ["head.avg_fc", "head.max_fc"]  # both head branches
    main_params = rows["main"]["finetuned"]["params"]
    assert rows["channels"]["finetuned"]["params"] < 0.8 * main_params  # channels removed by torch-pruning
    depth = json.loads((folder / "variants/depth/prune.json").read_text())
    assert depth["macs_ratio"] < 0.9  # residual_identity blocks removed
    assert (folder / "reports/summary.md").is_file()


@pytest.mark.slow
def test_checkpoint_rebuilds_in_a_fresh_process_from_its_import_path(example, tmp_path):
    folder, _ = example
    ckpt = folder / "models/baseline.pt"
    payload = torch.load(ckpt, weights_only=True)
    assert payload["arch"] == "sednet:build" and payload["arch_args"] == {"num_classes": 10, "width": 8, "groups": 4,
                                                                           "blocks": 2}
    assert payload["source"]["file"] == "sednet.py"
    assert payload["source"]["sha256"] == user.file_sha256(folder / "sednet.py")
    code = ("import torch\nfrom cnn_compress.models.checkpoint import load_checkpoint\n"
            f"c = load_checkpoint({str(ckpt)!r})\ntorch.manual_seed(0)\n"
            "print(type(c.model).__name__, round(float(c.model(torch.randn(2, 3, 32, 32)).sum()), 4))")
    src = str(ROOT / "src")
    here = run([sys.executable, "-c", code], cwd=folder, check=False)  # the module sits in the pipeline's folder
    env_path = f"{src}:{folder}"
    elsewhere = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                               env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert here.returncode == 0 and elsewhere.returncode == 0, (here.stderr, elsewhere.stderr)
    assert here.stdout.startswith("SEGroupNet ") and here.stdout == elsewhere.stdout
    lost = subprocess.run([sys.executable, "-c", "from cnn_compress.core.errors import cli\n" + code.replace(
        "c = load_checkpoint", "c = cli(load_checkpoint)")], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})
    assert lost.returncode == 2 and lost.stderr.count("\n") == 1
    assert "cannot rebuild its model: model.arch: cannot import sednet (ModuleNotFoundError" in lost.stderr


@pytest.mark.slow
def test_editing_the_model_source_reruns_train(example, tmp_path):
    folder, _ = example
    repo = copy_project(folder.parents[1], tmp_path / "repo")
    here = repo / "examples/own-model"
    assert "train:" not in dvc("status", "dvc.yaml", cwd=here).stdout
    source = here / "sednet.py"
    source.write_text(source.read_text().replace("return x * gate", "return gate * x  # same, reordered"))
    status = dvc("status", "dvc.yaml", cwd=here).stdout
    assert "train:" in status and "modified:           sednet.py" in status
    assert "prune@main:" not in status  # downstream re-runs only through train's new checkpoint
    warn = run([sys.executable, "-c", "from cnn_compress.models.checkpoint import load_checkpoint\n"
                "load_checkpoint('models/baseline.pt')"], cwd=here)
    assert "warning: models/baseline.pt: the model's code sednet.py changed since it was saved" in warn.stderr
    params = yaml.safe_load((here / "params.yaml").read_text())
    params["model"]["arch"] = "sednet:nothing"
    (here / "params.yaml").write_text(yaml.safe_dump(params))
    bad = run([sys.executable, str(repo / "stages/train.py")], cwd=here, check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: model.arch: sednet has no 'nothing'"


@pytest.mark.slow
def test_a_torchvision_model_by_name_runs_end_to_end(tmp_path):
    repo = make_project(tmp_path / "repo", {
        # width_mult 0.25 (torchvision's own keyword, through model.args): a quarter of the channels
        "model": {"arch": "torchvision:mobilenet_v3_small", "width": 0, "args": {"width_mult": 0.25}},
        "train": {"epochs": 1},
        "quantize": {"calib_per_class": 4, "formats": ["fp32", "int8_static"]},
        "export": {"formats": ["onnx", "ort_int8"], "calib_per_class": 4},
        "variants": {"main": {}},
    })
    out = dvc("repro", cwd=repo).stdout
    assert "Running stage 'benchmark@main'" in out
    rows = json.loads((repo / "variants/main/benchmark.json").read_text())["artifacts"]
    assert {"finetuned", "fp32", "int8_static", "onnx", "ort_int8"} <= set(rows)
    assert all(r["top1"] is not None and r["size_compressed_bytes"] > 0 for r in rows.values())
    payload = torch.load(repo / "models/baseline.pt", weights_only=True)
    assert payload["arch"] == "torchvision:mobilenet_v3_small" and "source" not in payload
    assert payload["arch_args"] == {"num_classes": 10, "width_mult": 0.25}  # the args travel with the weights


# ---- one line for each mistake (in-process: no pipeline needed) ----

def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str) -> str:
    """A module in a fresh folder made the working directory (the pipeline's folder)."""
    name = f"usermodel_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


GOOD = """
    import torch
    from torch import nn

    def build(num_classes, width=4):
        return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(width, num_classes))

    def not_a_model(num_classes):
        return {"layers": 3}

    def flat_only(num_classes):  # takes 3x8x8 inputs only
        return nn.Sequential(nn.Flatten(), nn.Linear(192, num_classes))

    def fixed_ten(num_classes):
        return build(10)

    def broken(num_classes):
        raise ValueError("width must be even\\nsecond line")

    NUMBER = 3
"""


def test_an_import_path_builds_with_model_args(tmp_path, monkeypatch):
    name = _module(tmp_path, monkeypatch, GOOD)
    cfg = ModelConfig(arch=f"{name}:build", args={"width": 6})
    model = build_model(cfg.arch, **cfg.arch_args(7))
    assert model[4].out_features == 7 and model[0].out_channels == 6
    user.check_io(model, cfg.arch, (3, 32, 32), 7)
    assert head_names(cfg.arch, model, (3, 32, 32), 7) == ("4",)
    assert user.source_of(cfg.arch).file == f"{name}.py"


@pytest.mark.parametrize(("callable_", "message"), [
    ("nothing", "model.arch: {m} has no 'nothing'"),
    ("NUMBER", "model.arch: {m}:NUMBER is a int, not a callable that builds the model"),
    ("not_a_model", "model.arch: {m}:not_a_model returned a dict, not a torch.nn.Module"),
    ("broken", "model.arch: {m}:broken(num_classes=10) failed (ValueError: width must be even)"),
])
def test_a_wrong_callable_is_one_line(tmp_path, monkeypatch, callable_, message):
    name = _module(tmp_path, monkeypatch, GOOD)
    with pytest.raises(ConfigError) as err:
        build_model(f"{name}:{callable_}", num_classes=10)
    assert str(err.value) == message.format(m=name)


def test_an_import_that_fails_names_the_module_and_the_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"model.arch: cannot import no_such_module_xyz \(ModuleNotFoundError: "
                                          r"No module named 'no_such_module_xyz'\)"):
        build_model("no_such_module_xyz:build", num_classes=10)
    name = _module(tmp_path, monkeypatch, "import torch\nraise RuntimeError('needs a GPU')\n")
    with pytest.raises(ConfigError, match=rf"cannot import {name} \(RuntimeError: needs a GPU\)"):
        build_model(f"{name}:build", num_classes=10)
    with pytest.raises(ConfigError, match="is not an import path"):
        build_model("my model:build", num_classes=10)
    with pytest.raises(ConfigError, match="torchvision has no classification model 'resnet181' "
                                          r"\(did you mean 'resnet18'\?\)"):
        build_model("torchvision:resnet181", num_classes=10)


def test_output_and_input_mismatches_are_one_line(tmp_path, monkeypatch):
    name = _module(tmp_path, monkeypatch, GOOD)
    with pytest.raises(ConfigError, match=r"outputs shape \(2, 10\) for 2 3x32x32 images; the data has 7 classes"):
        user.check_io(build_model(f"{name}:fixed_ten", num_classes=7), f"{name}:fixed_ten", (3, 32, 32), 7)
    with pytest.raises(ConfigError, match=rf"model.arch: {name}:flat_only cannot take 3x32x32 inputs \(RuntimeError: "):
        user.check_io(build_model(f"{name}:flat_only", num_classes=7), f"{name}:flat_only", (3, 32, 32), 7)
    with pytest.raises(ConfigError, match="model.args: only for an import-path model.arch"):
        ModelConfig(arch="resnet20", args={"depth": 3})
    with pytest.raises(ConfigError, match="model.args.num_classes: is set from the data's class count"):
        from cnn_compress.core.config import parse_section
        parse_section(ModelConfig, {"arch": f"{name}:build", "args": {"num_classes": 3}})


def test_a_source_that_is_not_a_dependency_is_one_line(tmp_path, monkeypatch):
    name = _module(tmp_path, monkeypatch, GOOD)
    (tmp_path / "place.yaml").write_text("up: ''\nlib: src/cnn_compress\nmodel_code: src/cnn_compress/models\n")
    with pytest.raises(ConfigError, match=rf"place.yaml: model_code is 'src/cnn_compress/models', but model.arch "
                                          rf"{name}:build is defined in {name}.py: set model_code: {name}.py"):
        user.check_tracked(f"{name}:build")
    (tmp_path / "place.yaml").write_text(f"up: ''\nlib: src/cnn_compress\nmodel_code: {name}.py\n")
    user.check_tracked(f"{name}:build")


def test_a_layer_that_cannot_be_exported_is_named_with_the_runtime(tmp_path):
    from cnn_compress.export.exporters import write_onnx

    class DataDependent(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum().item() > 1 else x  # a Python branch on a value: no graph holds it

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), DataDependent(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 10))
    with pytest.raises(UnsupportedFormatError, match=r"^ONNX export failed at layer 1 \(DataDependent\): "):
        write_onnx(model, torch.randn(2, 3, 32, 32), tmp_path / "m.onnx", 18)


def test_layers_torch_pruning_would_break_are_listed_and_left_whole(capsys):
    class ImageResidual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pre = torch.nn.Conv2d(3, 3, 3, padding=1)  # added to the input image: its channels are fixed
            self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.fc = torch.nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.c1(x + self.pre(x)))
            return self.fc(x.mean((2, 3)))

    model = ImageResidual()
    ctx = PruneContext(torch.randn(8, 3, 32, 32), torch.arange(8), ("fc",), probe=True)
    prune_model(model, PruneConfig(method="structured", ratio=0.5), ctx)
    assert "left whole: pre" in capsys.readouterr().err
    assert model.pre.out_channels == 3 and model.c1.out_channels < 16
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_depth_pruning_finds_declared_blocks_or_says_why(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples/own-model"))
    model = build_model("sednet:build", num_classes=10, width=8)
    ctx = PruneContext(torch.randn(8, 3, 32, 32), torch.arange(8), ("head.avg_fc", "head.max_fc"))
    prune_model(model, PruneConfig(method="blocks", ratio=0.5), ctx)
    assert sum(type(m).__name__ == "RemovedBlock" for m in model.modules()) == 2  # half of the 4 marked blocks
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    plain(torch.randn(1, 3, 32, 32))
    with pytest.raises(ConfigError, match="no removable residual block .*residual_identity = True"):
        prune_model(plain, PruneConfig(method="blocks", ratio=0.5), PruneContext.random("2"))
