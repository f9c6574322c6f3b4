"""Faults in params and in running stages that used to pass silently (issue 32: 2, 3, 7, 8, 10;
issue 33: 5): each now stops with one line and exit code 2, or leaves nothing behind."""
from __future__ import annotations

import importlib.util
import math
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, copy_project, dvc, set_params, set_variants

from cnn_compress.core.config import parse_section
from cnn_compress.core.errors import BusyError, ConfigError, DivergedError
from cnn_compress.export.config import FORMATS as EXPORT_FORMATS
from cnn_compress.export.config import unavailable
from cnn_compress.models.zoo import build_model
from cnn_compress.quantize.config import QuantizeConfig
from cnn_compress.train.config import FinetuneConfig, TrainConfig
from cnn_compress.train.loop import setup_torch, train_model
from cnn_compress.train.resume import Resume
from cnn_compress.variants.resolve import resolve_all

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def one_line_error(err: str) -> str:
    """The error line of a stage's stderr, checked to be the last line and no traceback."""
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err[-3000:]
    return last


def run_stage(project: Path, name: str, monkeypatch, capsys) -> tuple[object, str]:
    """(exit code, stderr) of ``stages/<name>.py`` run in this process (runpy, as __main__)."""
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", [f"stages/{name}.py"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(f"stages/{name}.py", run_name="__main__")
    return exc.value.code, capsys.readouterr().err


@pytest.fixture()
def params_project(tmp_path):
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


# --- 3. every float setting is finite ---------------------------------------------------------------

@pytest.mark.parametrize("text", [".inf", "-.inf", ".nan", ".NaN"])
@pytest.mark.parametrize(("cls", "section", "key"), [
    (FinetuneConfig, {"lr": "{}"}, "finetune.lr"),
    (TrainConfig, {"momentum": "{}"}, "train.momentum"),
    (FinetuneConfig, {"distill": {"temperature": "{}"}}, "finetune.distill.temperature"),
    (FinetuneConfig, {"by_ratio": [{"upto": 0.5, "lr": "{}"}]}, "finetune.by_ratio[0].lr"),
    (QuantizeConfig, {"formats": {"fixed4": {"act_percentile": "{}"}}}, "quantize.formats.fixed4.act_percentile"),
])
def test_float_settings_must_be_finite(cls, section, key, text):
    raw = yaml.safe_load(yaml.safe_dump(section).replace("'{}'", text))  # as YAML reads the file
    with pytest.raises(ConfigError) as exc:
        parse_section(cls, raw)
    assert str(exc.value).startswith(f"{key}: must be a finite number, got ")


def test_an_infinite_lr_stops_the_variants_stage(params_project, monkeypatch, capsys):
    set_params(params_project, {"finetune": {"lr": math.inf}})
    assert "lr: .inf" in (params_project / "params.yaml").read_text()
    code, err = run_stage(params_project, "variants", monkeypatch, capsys)
    assert code == 2 and one_line_error(err) == "error: finetune.lr: must be a finite number, got inf"
    assert not (params_project / "configs").exists()


# --- 3. a diverging training stops with one line naming the stage and epoch ---------------------------

def _diverging(tiny_dataset, **settings):
    setup_torch(0, 1)
    model = build_model("resnet8", num_classes=tiny_dataset.num_classes, width=8)
    cfg = FinetuneConfig(**{"epochs": 3, "batch_size": 32, "lr": 1e12, "device": "cpu", "threads": 1} | settings)
    return model, cfg


def test_a_diverging_loss_stops_training_in_its_epoch(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, cfg = _diverging(tiny_dataset)
    with pytest.raises(DivergedError) as exc:
        train_model(model, tiny_dataset, cfg, resume="v/finetuned.pt")
    assert str(exc.value).startswith("finetune: training diverged in epoch 1/3 (loss ")
    assert "lower the learning rate (lr 1e+12)" in str(exc.value)
    assert not (tmp_path / ".resume").exists()  # no state of a diverged epoch, and the lock is gone


def test_non_finite_weights_stop_training_even_with_a_finite_loss(tiny_dataset, monkeypatch):
    """One step per epoch: each step's loss is finite, the weights (BatchNorm statistics) it leaves are not."""
    model, cfg = _diverging(tiny_dataset, steps_per_epoch=1)
    monkeypatch.setenv("DVC_STAGE", "quantize@v")  # as dvc runs it: the stage is named too
    with pytest.raises(DivergedError) as exc:
        train_model(model, tiny_dataset, cfg, label="QAT int8_qat")
    assert re.match(r"QAT int8_qat \(stage quantize@v\): training diverged in epoch [12]/3 \(weight \S+ is not "
                    r"finite\); lower the learning rate \(lr 1e\+12\) and run again$", str(exc.value)), str(exc.value)


@pytest.mark.slow
def test_a_diverging_finetune_fails_its_dvc_stage(reproduced, tmp_path):
    repo = copy_project(reproduced[0], tmp_path / "repo")
    set_params(repo, {"finetune": {"lr": 1e12, "by_ratio": []}})
    proc = dvc("repro", cwd=repo, check=False)
    assert proc.returncode != 0
    assert ("error: finetune (stage finetune@main): training diverged in epoch 1/1 (loss "
            in proc.stderr + proc.stdout), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (repo / "variants/main/finetuned.pt").exists() and not (repo / ".resume").exists()


# --- issue 33, 5: one line per epoch in logs, labelled by what trains ---------------------------------

def test_each_epoch_writes_one_log_line_without_a_bar(params_project):
    from cnn_compress.data.config import DataConfig
    from cnn_compress.data.dataset import prepare

    prepare(DataConfig(max_per_class=30), params_project / "data/prepared")
    set_params(params_project, {"model": {"arch": "resnet8", "width": 8}, "train": {"epochs": 2, "steps_per_epoch": 2}})
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": os.environ["PATH"], "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "stages/train.py"], cwd=params_project, env=env, capture_output=True,
                          text=True)  # stderr is a pipe, as in `dvc repro > log`
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train epoch ")]
    assert [line.split(":")[0] for line in lines] == ["train epoch 1/2", "train epoch 2/2"]
    assert all("loss " in line and "val " in line and " lr " in line for line in lines)
    assert "\r" not in proc.stderr and "epoch/s" not in proc.stderr and "s/epoch" not in proc.stderr  # no bar


def test_training_between_iterative_prune_steps_is_labelled_by_step(tiny_checkpoint, tiny_dataset, capfd):
    """The epochs an iterative schedule trains after each step are the prune stage's, not "finetune"."""
    from cnn_compress.prune.config import PruneConfig
    from cnn_compress.prune.run import prune_checkpoint
    from cnn_compress.train.config import FinetuneConfig

    cfg = PruneConfig(method="l1_unstructured", ratio=0.5, schedule="iterative", steps=2, step_epochs=1)
    before = {k: v.clone() for k, v in tiny_checkpoint.model.state_dict().items()}
    pruned, _ = prune_checkpoint(tiny_checkpoint, tiny_dataset, cfg, FinetuneConfig(epochs=1, steps_per_epoch=1))
    after = tiny_checkpoint.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # pruned a copy: the input is as it was
    assert pruned.model is not tiny_checkpoint.model
    err = capfd.readouterr().err
    assert "prune step 1 epoch 1/1" in err and "prune step 2 epoch 1/1" in err, err
    assert "finetune epoch" not in err


def test_qat_epochs_are_labelled_qat(tiny_checkpoint, tiny_dataset, tmp_path, monkeypatch, capfd):
    from cnn_compress.data.dataset import calibration_batch
    from cnn_compress.quantize import formats
    from cnn_compress.quantize.config import Int8QatConfig

    class Trained(Exception):
        """Raised once the QAT epochs ran: converting and saving the program is not what this checks."""

    def then_stop(*args, **kwargs):
        train_model(*args, **kwargs)
        raise Trained

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(formats, "train_model", then_stop)
    ctx = formats.QuantContext(calibration_batch(tiny_dataset, 2), tiny_dataset,
                               FinetuneConfig(batch_size=32, steps_per_epoch=1, threads=1, device="cpu"))
    with pytest.raises(Trained):
        formats.HANDLERS[Int8QatConfig].build(tiny_checkpoint, Int8QatConfig(epochs=1), ctx, tmp_path / "int8_qat.pt2")
    err = capfd.readouterr().err
    assert "QAT int8_qat epoch 1/1: loss " in err and "finetune epoch" not in err


def test_two_torch_warnings_are_silenced_in_stages_and_others_still_show():
    script = """
import logging, sys
sys.path.insert(0, "src")
from cnn_compress.core.errors import cli

@cli
def main():
    import torchao  # registers an Enum with torch's _pytree: a deprecation warning
    import torch.utils.cpp_extension as ext  # on a machine with nvcc but no GPU: 'No CUDA runtime is found'
    ext._find_cuda_home()
    logging.getLogger("torch.utils._pytree").warning("another pytree warning")
    logging.getLogger("torch.utils.cpp_extension").warning("another cpp_extension warning")

main()
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Enum subclass" not in proc.stderr and "No CUDA runtime" not in proc.stderr
    assert "another pytree warning" in proc.stderr and "another cpp_extension warning" in proc.stderr


# --- 2. format names: no built-in artifact's, no export format's, no path ----------------------------

@pytest.mark.parametrize(("name", "message"), [
    ("finetuned", "quantize.formats.finetuned: is reserved: the benchmark lists the fine-tuned checkpoint"),
    ("pruned", "quantize.formats.pruned: is reserved: the benchmark lists the pruned checkpoint"),
    ("Baseline", "quantize.formats.Baseline: is reserved: the benchmark lists the trained model"),
    *[(n, f"quantize.formats.{n}: is reserved for an export format") for n in EXPORT_FORMATS],
    ("..", "quantize.formats: format name '..' is not a plain file name"),
    (".hidden", "quantize.formats: format name '.hidden' is not a plain file name"),
    ("a/b", "quantize.formats: format name 'a/b' is not a plain file name"),
    ("a\\b", "quantize.formats: format name 'a\\\\b' is not a plain file name"),
    ("fp16..x", "quantize.formats: format name 'fp16..x' is not a plain file name"),
    ("fp16+compile", "quantize.formats: format name 'fp16+compile' is not a plain file name"),
    ("", "quantize.formats: a format name must be a non-empty string, got ''"),
])
def test_format_names_cannot_take_another_artifacts_place(name, message):
    with pytest.raises(ConfigError) as exc:
        parse_section(QuantizeConfig, {"formats": {"fp32": {}, name: {"type": "fp16"}}})
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_a_plain_format_name_is_still_free():
    cfg = parse_section(QuantizeConfig, {"formats": {"fp16.v2": {"type": "fp16"}, "onnx_like": {"type": "fp32"}}})
    assert cfg.names() == ("fp16.v2", "onnx_like")


def test_a_variants_reserved_format_name_is_named_by_its_variant_key():
    params = BASE | {"variants": {"v": {"quantize": {"formats": {"finetuned": {"type": "fp16"}, "onnx": {"type": "fp16"}}}}}}
    with pytest.raises(ConfigError, match=r"^variants\.v\.quantize\.formats\.finetuned: is reserved"):
        resolve_all(params)


# --- 7. the whole params file is validated whenever any of it changes ---------------------------------

def test_a_misspelt_section_stops_the_variants_stage(params_project, monkeypatch, capsys):
    set_params(params_project, {"prun": {"ratio": 0.7}})
    code, err = run_stage(params_project, "variants", monkeypatch, capsys)
    assert code == 2 and one_line_error(err) == "error: prun: unknown params section (did you mean 'prune'?)"


@pytest.mark.slow
def test_any_params_edit_reruns_variants_and_only_what_changed(reproduced, tmp_path):
    """The variants stage tracks the whole params file: a misspelt section fails `dvc repro` at once,
    and an edit elsewhere re-runs variants, whose unchanged configs re-run nothing downstream."""
    repo = copy_project(reproduced[0], tmp_path / "repo")
    configs = {p: p.read_bytes() for p in sorted((repo / "configs").rglob("*.json"))}
    set_params(repo, {"prun": {"ratio": 0.7}})
    proc = dvc("repro", cwd=repo, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "error: prun: unknown params section (did you mean 'prune'?)" in out
    assert "Running stage 'variants'" in out and "Running stage 'prune@" not in out
    params = yaml.safe_load((repo / "params.yaml").read_text())
    del params["prun"]
    params["train"]["epochs"] += 1  # a train setting: no resolved variant config changes
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc("repro", "--single-item", "variants", cwd=repo).stdout
    assert "Running stage 'variants'" in out
    assert {p: p.read_bytes() for p in sorted((repo / "configs").rglob("*.json"))} == configs
    status = dvc("status", cwd=repo).stdout
    assert "train:" in status  # its params changed; nothing downstream of the configs did
    assert "variants:" not in status and "@main" not in status, status


# --- 10. an export this machine cannot build is refused when variants resolve --------------------------

@pytest.mark.skipif(unavailable("tensorrt_fp16") is None, reason="TensorRT runs here")
def test_a_tensorrt_variant_is_refused_by_the_variants_stage(params_project, monkeypatch, capsys):
    set_variants(params_project, {"main": {}, "gpu": {"export": {"formats": ["onnx", "tensorrt_fp16"]}}})
    code, err = run_stage(params_project, "variants", monkeypatch, capsys)
    assert code == 2
    assert one_line_error(err).startswith("error: variants.gpu.export.formats: tensorrt_fp16 cannot run on this "
                                          f"machine: {unavailable('tensorrt_fp16')}")
    assert not (params_project / "configs").exists()  # nothing resolved: no variant stage runs
    set_variants(params_project, {"main": {}})
    set_params(params_project, {"export": {"formats": ["tensorrt_int8"]}})
    code, err = run_stage(params_project, "variants", monkeypatch, capsys)
    assert code == 2 and one_line_error(err).startswith(
        "error: export.formats (variant main): tensorrt_int8 cannot run on this machine: ")


def test_the_machine_check_imports_no_runtime():
    script = ("import sys; sys.path.insert(0, 'src'); from cnn_compress.export.config import unavailable; "
              "[unavailable(f) for f in ('onnx', 'openvino_int8', 'tensorrt_fp32')]; "
              "print(' '.join(m for m in ('torch', 'tensorrt', 'openvino', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    imported = set(out.split())
    assert not imported & {"tensorrt", "openvino", "onnxruntime"}
    if importlib.util.find_spec("tensorrt") is None:  # torch only to ask for CUDA where TensorRT is installed
        assert "torch" not in imported


# --- 8. a stage dies with its dvc, and one process at a time trains an output -------------------------

def _stage_pids(repo: Path, script: str) -> list[int]:
    """The processes running ``script`` in ``repo`` (from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            if any(part.decode(errors="replace").endswith(script) for part in cmd) and \
                    Path(os.readlink(proc / "cwd")) == repo:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/sh"])  # bash execs the stage; dash stays its parent
def test_sigkill_of_dvc_repro_ends_the_stage_it_runs(reproduced, tmp_path, shell):
    repo = copy_project(reproduced[0], tmp_path / "repo").resolve()
    set_params(repo, {"train": {"epochs": 200}})
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "SHELL": shell,
                        "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train"], cwd=repo, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (repo / ".resume").is_dir():  # the stage is training: its lock is taken
            assert proc.poll() is None and time.monotonic() < deadline, "the train stage did not start"
            time.sleep(0.05)
        pids = _stage_pids(repo, "stages/train.py")
        assert pids, "no train stage process found"
        os.kill(proc.pid, signal.SIGKILL)  # dvc alone, as the OOM killer or `kill -9` would
        proc.wait()
        deadline = time.monotonic() + 10
        while alive := [p for p in pids if Path(f"/proc/{p}").exists() and
                        Path(f"/proc/{p}/stat").read_text().split(")")[-1].split()[0] != "Z"]:
            assert time.monotonic() < deadline, f"stage processes {alive} outlived dvc"
            time.sleep(0.1)
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the session (the test failed)


def test_a_second_writer_of_the_same_resume_state_stops_with_one_line(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
         "from cnn_compress.train.resume import Resume\n"
         "with Resume('models/baseline.pt', 'abc').held():\n print('held', flush=True); time.sleep(60)",
         str(ROOT / "src")], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BusyError) as exc, Resume("models/baseline.pt", "other").held():
            pass
        assert str(exc.value) == (f".resume/models__baseline.pt.lock: another process (pid {holder.pid}) is "
                                  "training models/baseline.pt now; wait for it or stop it, then run again")
        setup_torch(0, 1)
        model = build_model("resnet8", num_classes=tiny_dataset.num_classes, width=8)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(BusyError):
            train_model(model, tiny_dataset, TrainConfig(epochs=1, device="cpu"), resume="models/baseline.pt")
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing trained
    finally:
        holder.kill()
        holder.wait()
    with Resume("models/baseline.pt", "other").held():  # a dead holder's lock is free
        assert (tmp_path / ".resume/models__baseline.pt.lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".resume").exists()
