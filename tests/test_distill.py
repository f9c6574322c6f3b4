"""Knowledge distillation (finetune.distill): the loss, its pull towards the teacher, and a variant
that fine-tunes and fixed-point fine-tunes with it through the real dvc CLI."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import copy_project, dvc, set_variants

from cnn_compress.core.config import parse_section
from cnn_compress.core.errors import ConfigError
from cnn_compress.data.evaluation import predict_logits
from cnn_compress.models.checkpoint import load_checkpoint
from cnn_compress.train.config import DistillConfig, FinetuneConfig
from cnn_compress.train.distill import distill_loss
from cnn_compress.train.loop import setup_torch, train_model


def test_distill_loss_weighs_labels_against_the_teacher():
    logits, other = torch.randn(8, 10), torch.randn(8, 10)
    hard = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
    cfg = DistillConfig(weight=0.25, temperature=2.0)
    assert torch.allclose(distill_loss(logits, logits, hard, cfg), 0.75 * hard)  # same outputs: no soft term
    soft = F.kl_div(F.log_softmax(logits / 2, 1), F.softmax(other / 2, 1), reduction="batchmean") * 4
    assert torch.allclose(distill_loss(logits, other, hard, cfg), 0.75 * hard + 0.25 * soft, atol=1e-6)


def test_bad_distill_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"finetune.distill.temperature: must be > 0"):
        parse_section(FinetuneConfig, {"distill": {"temperature": 0}})
    with pytest.raises(ConfigError, match=r"finetune.distill.weigth: unknown key \(did you mean 'weight'"):
        parse_section(FinetuneConfig, {"distill": {"weigth": 0.5}})


def _kl_to(teacher, student, ds) -> float:
    images, _ = ds.split("test")
    t = predict_logits(teacher.eval(), images, ds.mean, ds.std, 256)
    s = predict_logits(student.eval(), images, ds.mean, ds.std, 256)
    return float(F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="batchmean", log_target=True))


def test_distillation_pulls_the_student_towards_the_teacher(tiny_dataset, tiny_checkpoint):
    """A teacher whose classes are rotated by one: the labels pull one way, the teacher another, so
    only the distillation term can bring the student's outputs near the teacher's."""
    base = tiny_checkpoint.model
    teacher = copy.deepcopy(base)
    with torch.no_grad():
        teacher.linear.weight.copy_(base.linear.weight.roll(1, 0))
        teacher.linear.bias.copy_(base.linear.bias.roll(1, 0))
    kl = {}
    for weight in (0.0, 1.0):
        setup_torch(0, 2)
        student = copy.deepcopy(base)
        cfg = FinetuneConfig(epochs=3, batch_size=32, lr=0.05, device="cpu", distill=DistillConfig(weight=weight))
        train_model(student, tiny_dataset, cfg, teacher=teacher)
        kl[weight] = _kl_to(teacher, student, tiny_dataset)
    assert kl[1.0] < 0.5 * kl[0.0], kl  # same start, data and steps: only the loss differs


@pytest.mark.slow
def test_a_distilled_variant_runs_through_dvc_and_records_its_teacher(reproduced, tmp_path):
    """A variant like `main` but for finetune.distill: its fine-tuned weights differ from main's
    (the teacher is the only difference), and its fixed-point fine-tuning runs with the teacher too."""
    repo = copy_project(reproduced[0], tmp_path / "repo")
    fmt = {"fixed3": {"epochs": 1, "lr": 0.005}}
    set_variants(repo, {"main": {}, "kd": {"finetune": {"distill": {"weight": 0.7, "temperature": 3.0}},
                                          "quantize": {"formats": fmt}}})
    out = dvc("repro", "quantize@kd", cwd=repo).stdout
    assert "Running stage 'finetune@kd'" in out and "Running stage 'train'" not in out
    assert "Running stage 'finetune@main'" not in out
    kd = load_checkpoint(repo / "variants/kd/finetuned.pt")
    assert kd.history[-1]["config"]["distill"] == {"weight": 0.7, "temperature": 3.0, "teacher": "baseline"}
    main = load_checkpoint(repo / "variants/main/finetuned.pt")
    assert main.history[-1]["config"]["distill"]["weight"] == 0.0
    a, b = kd.model.state_dict(), main.model.state_dict()
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)  # the teacher changed the result
    manifest = json.loads((repo / "variants/kd/quantized/manifest.json").read_text())
    assert list(manifest) == ["fixed3"]
    import cnn_compress.quantize.fakequant  # noqa: F401  (registers the fixed-point grids' loader)

    fixed = load_checkpoint(repo / "variants/kd/quantized/fixed3.pt")
    assert fixed.history[-1]["config"]["settings"]["epochs"] == 1  # fine-tuned (with the teacher) at 3 bits


def test_a_teacher_of_other_classes_is_refused(tiny_dataset, tiny_checkpoint, tmp_path):
    from cnn_compress.models.checkpoint import save_checkpoint
    from cnn_compress.train.distill import load_teacher

    other = tiny_checkpoint.derive(tiny_checkpoint.model, "test", {})
    other.class_names = list(reversed(other.class_names))
    save_checkpoint(tmp_path / "t.pt", other)
    with pytest.raises(ConfigError, match=r"^finetune.distill.teacher: .*t.pt was trained on other classes"):
        load_teacher(DistillConfig(weight=0.5, teacher=str(tmp_path / "t.pt")), tiny_dataset)
    assert load_teacher(DistillConfig(weight=0.0), tiny_dataset) is None
