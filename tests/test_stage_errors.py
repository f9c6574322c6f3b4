"""Bad input to a stage script: exit code 2, one line naming the problem, outputs untouched.

The parameter cases run each script in this process (``runpy``, as ``__main__``): the same code
path as a real run without paying a torch import per case. The checkpoint cases, and
test_failed_stage_exits_2_and_keeps_outputs through ``dvc repro``, run real processes.
"""
import runpy
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, set_params

from cnn_compress.checkpoint import save_checkpoint


@pytest.fixture()
def project(tmp_path, tiny_checkpoint):
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    save_checkpoint(tmp_path / "models/baseline.pt", tiny_checkpoint)
    (tmp_path / "models/pruned.pt").write_bytes(b"earlier output")
    return tmp_path


def stage(project, name):
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, f"stages/{name}.py"], cwd=project, env=env, capture_output=True, text=True)


def stage_in_process(project, name, monkeypatch, capsys) -> tuple[object, str]:
    """(exit code, stderr) of ``python stages/<name>.py [options]`` run here; any other exception
    fails the test. ``name`` may carry options: ``"quantize --dir sweeps/0.3"``."""
    monkeypatch.chdir(project)
    name, *options = name.split()
    monkeypatch.setattr(sys, "argv", [f"stages/{name}.py", *options])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(f"stages/{name}.py", run_name="__main__")
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("prune", {"prune": {"ratio": 1.5}}, "error: prune.ratio: must be in [0, 1), got 1.5"),
        ("prune", {"prune": {"ratoi": 0.5}}, "error: prune.ratoi: unknown key (did you mean 'ratio'?)"),
        ("prune", {"prune": {"method": "magic"}}, "error: prune.method: unknown method 'magic'"),
        ("train", {"train": {"epochs": "ten"}}, "error: train.epochs: must be an integer, got 'ten'"),
        ("quantize", {"quantize": {"formats": ["int3"]}}, "error: quantize.formats: unknown format 'int3'"),
        ("quantize", {"quantize": {"formats": ["fixed9"]}}, "error: quantize.formats: unknown format 'fixed9'"),
        ("quantize", {"quantize": {"fixed_scheme": "signed"}},
         "error: quantize.fixed_scheme: must be one of symmetric, asymmetric, got 'signed'"),
        ("quantize", {"quantize": {"qat_epochs": 0}}, "error: quantize.qat_epochs: must be >= 1, got 0"),
        ("quantize --dir sweeps/0.3", {"quantize": {"sweep_formats": ["int3"]}},
         "error: quantize.sweep_formats: unknown format 'int3'"),
        ("quantize", {"quantize": {"sweep_formats": []}},
         "error: quantize.sweep_formats: must name at least one format, or be null"),
        ("export --dir sweeps/0.3", {"export": {"sweep_formats": ["tflite"]}},
         "error: export.sweep_formats: unknown format 'tflite'"),
        ("export", {"export": {"formats": ["tflite"]}}, "error: export.formats: unknown format 'tflite'"),
        ("prepare", {"data": {"name": "imagenet"}}, "error: data.name: unknown data set 'imagenet'"),
        ("train", {}, "error: data/prepared: prepared data set not found"),
        ("prepare", {"data": {"name": "imagefolder"}}, "error: data.source: imagefolder needs a directory"),
        ("prepare", {"data": {"name": "imagefolder", "source": "no.tar.gz"}}, "error: no.tar.gz: data.source not found"),
        ("prepare", {"data": {"mean": [0.5]}}, "error: data.mean: must list 3 channel values or none"),
        ("train", {"model": {"reset_head": True}}, "error: model.reset_head: needs model.pretrained"),
        ("sweep", {"prune": {"ratios": [0.3]}}, "error: sweep: branch results missing (sweeps/0.3/metrics/benchmark.json)"),
        ("prune", {"prune": {"order": "after_quantize", "method": "structured"}},
         "error: prune.order: after_quantize prunes quantized weights one-shot"),
    ],
)
def test_bad_params_and_missing_inputs(project, name, params, message, monkeypatch, capsys):
    set_params(project, params)
    code, err = stage_in_process(project, name, monkeypatch, capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in err
    assert (project / "models/pruned.pt").read_bytes() == b"earlier output"


@pytest.mark.parametrize(("content", "message"), [(None, "checkpoint not found"), (b"PK\x03\x04junk", "corrupt")])
def test_missing_or_corrupt_checkpoint(project, content, message):
    path = project / "models/baseline.pt"
    path.unlink()
    if content is not None:
        path.write_bytes(content)
    proc = stage(project, "prune")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert (project / "models/pruned.pt").read_bytes() == b"earlier output"
