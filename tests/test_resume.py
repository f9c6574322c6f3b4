"""A training, fine-tuning or QAT run killed mid-way continues from its last completed epoch and
ends with the same bytes as a run that was never interrupted (CPU, fixed seed)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import copy_project, dvc, make_project, set_params

from cnn_compress.models.zoo import build_model
from cnn_compress.prune.pruning import sparsity_masks
from cnn_compress.train.config import FinetuneConfig, TrainConfig
from cnn_compress.train.loop import setup_torch, train_model
from cnn_compress.train.resume import Resume, run_digest

CFG = TrainConfig(epochs=4, batch_size=32, lr=0.05, device="cpu", steps_per_epoch=3)


class Killed(Exception):
    """Stands in for SIGINT / SIGKILL right after an epoch's state was written."""


def _model() -> torch.nn.Module:
    setup_torch(0, 2)
    return build_model("resnet8", num_classes=10, width=8)


KILL_AFTER: list[int] = []  # the epoch after whose saved state the next run "dies"


@pytest.fixture(autouse=True)
def _killable(monkeypatch, tmp_path):
    """Resume.save raises Killed right after writing the epoch in KILL_AFTER; runs in tmp_path."""
    save = Resume.save

    def save_then_die(self, state):
        save(self, state)
        if KILL_AFTER and state["epoch"] == KILL_AFTER[0]:
            KILL_AFTER.clear()
            raise Killed

    monkeypatch.setattr(Resume, "save", save_then_die)
    monkeypatch.chdir(tmp_path)
    yield
    KILL_AFTER.clear()


def _run(ds, cfg=CFG, kill_after: int | None = None, model=None, resume="models/out.pt"):
    model = model or _model()
    if kill_after is not None:
        KILL_AFTER[:] = [kill_after]
    return model, train_model(model, ds, cfg, masks=sparsity_masks(model), resume=resume)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_killed_training_resumes_to_the_same_weights_and_history(tiny_dataset, tmp_path, capfd):
    reference, ref_history = _run(tiny_dataset)
    assert not (tmp_path / ".resume").exists()  # removed when training completes
    with pytest.raises(Killed):
        _run(tiny_dataset, kill_after=2)
    assert len(list((tmp_path / ".resume").glob("models__out.pt.*.pt"))) == 1
    resumed, history = _run(tiny_dataset)
    assert "resuming after epoch 2" in capfd.readouterr().err
    assert history == ref_history and len(history) == CFG.epochs
    assert _same_state(resumed, reference)
    assert not (tmp_path / ".resume").exists()


def test_masks_and_momentum_survive_a_resume(tiny_dataset):
    """Fine-tuning a pruned model: the masks hold and the optimizer's momentum is restored."""
    cfg = FinetuneConfig(epochs=3, batch_size=32, lr=0.02, device="cpu", steps_per_epoch=2)

    def pruned():
        model = _model()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("conv1.weight"):
                    p[: p.shape[0] // 2] = 0
        return model

    reference, _ = _run(tiny_dataset, cfg, model=pruned(), resume="v/finetuned.pt")
    with pytest.raises(Killed):
        _run(tiny_dataset, cfg, kill_after=1, model=pruned(), resume="v/finetuned.pt")
    model, _ = _run(tiny_dataset, cfg, model=pruned(), resume="v/finetuned.pt")
    assert _same_state(model, reference)
    convs = [p for n, p in model.named_parameters() if n.endswith("conv1.weight")]
    assert convs and all((p[: p.shape[0] // 2] == 0).all() and p.abs().sum() > 0 for p in convs)


def test_state_of_another_configuration_or_a_corrupt_file_is_never_trusted(tiny_dataset, tmp_path, capfd):
    reference, _ = _run(tiny_dataset)
    with pytest.raises(Killed):
        _run(tiny_dataset, kill_after=1)
    other = CFG.__class__(**{**CFG.__dict__, "lr": 0.01})  # a changed param: a different run
    _run(tiny_dataset, cfg=other)
    err = capfd.readouterr().err
    assert "another configuration" in err and "resuming" not in err
    assert not (tmp_path / ".resume").exists()  # the stale state went, the new run finished
    with pytest.raises(Killed):
        _run(tiny_dataset, kill_after=1)
    (state,) = (tmp_path / ".resume").glob("*.pt")
    state.write_bytes(state.read_bytes()[:100])  # truncated by a crash of the disk, say
    model, _ = _run(tiny_dataset)
    assert "unreadable resume state" in capfd.readouterr().err
    assert _same_state(model, reference)  # started over, same result


def test_resume_can_be_turned_off(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_COMPRESS_RESUME", "0")
    _run(tiny_dataset, kill_after=None)
    assert Resume.for_run("x", CFG, _model(), (), {}) is None and not (tmp_path / ".resume").exists()


@pytest.mark.slow
def test_dvc_repro_killed_mid_training_continues_to_the_same_checkpoint(tmp_path):
    """SIGKILL a real ``dvc repro`` while the train stage runs, run it again: same bytes as a run
    that was never interrupted, and only the epochs after the last saved one are trained again."""
    whole = make_project(tmp_path / "whole", {"train": {"epochs": 30}})
    killed = copy_project(whole, tmp_path / "killed")  # the same fresh project: one git + dvc init fewer
    dvc("repro", "train", cwd=whole)
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train"], cwd=killed, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((killed / ".resume").glob("models__baseline.pt.*.pt")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no resume state appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "models/baseline.pt").exists(), "training finished before the kill: lengthen it"
    out = dvc("repro", "train", cwd=killed)
    assert "resuming after epoch" in out.stderr + out.stdout
    for name in ("models/baseline.pt", "metrics/train.json", "plots/train_curve.csv"):
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    assert not (killed / ".resume").exists()
    set_params(killed, {"train": {"epochs": 3, "lr": 0.05}})  # nothing stale is left to resume from
    again = dvc("repro", "train", cwd=killed)
    assert "Running stage 'train'" in again.stdout and "resuming" not in again.stderr + again.stdout


def test_a_state_that_does_not_fit_is_dropped_and_training_starts_over(tiny_dataset, tmp_path, capfd):
    reference, _ = _run(tiny_dataset)
    with pytest.raises(Killed):
        _run(tiny_dataset, kill_after=1)
    (path,) = (tmp_path / ".resume").glob("*.pt")
    state = torch.load(path, weights_only=True)
    state["optimizer"] = {"state": {}, "param_groups": []}  # written by another version, say
    torch.save(state, path)
    model, _ = _run(tiny_dataset)
    assert "does not fit this run" in capfd.readouterr().err
    assert _same_state(model, reference)


def test_settings_outside_the_weights_key_the_state():
    """A fixed-point format's bits live outside the weights: they are part of the key (run_key)."""
    model = _model()
    digests = {run_digest(CFG, model, (), {}, extra={"bits": b}) for b in (2, 3)}
    frozen = _model()
    frozen.conv1.weight.requires_grad_(False)
    assert len(digests | {run_digest(CFG, model, (), {}), run_digest(CFG, frozen, (), {})}) == 4


SAVE_UNDER_LIMIT = """
import resource, sys, torch
from cnn_compress.core.errors import cli
from cnn_compress.train.resume import Resume
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))  # Python ignores SIGXFSZ: the write fails, EFBIG
cli(lambda: Resume("models/baseline.pt", "d").save({"weights": torch.zeros(100_000)}))()
"""


def test_a_resume_file_that_does_not_fit_is_one_line_and_leaves_nothing(tmp_path):
    """The per-epoch resume file on a full disk: one line, exit 2, no partial or temp file."""
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
                        "CNN_COMPRESS_RESUME_DIR": str(tmp_path / "resume")}
    proc = subprocess.run([sys.executable, "-c", SAVE_UNDER_LIMIT], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {tmp_path}/resume/models__baseline.pt.d.pt: cannot write it "
                                                    "(File too large); nothing was written"), proc.stderr
    assert "Traceback" not in proc.stderr and list((tmp_path / "resume").iterdir()) == []
