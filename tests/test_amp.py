"""Mixed-precision training (train.amp / finetune.amp): bf16 autocast on the CPU, fp16 with a
gradient scaler on CUDA; float32 weights either way, reproducible with a fixed seed."""
from __future__ import annotations

import pytest
import torch
import yaml

from cnn_compress.core.config import parse_section
from cnn_compress.core.errors import ConfigError
from cnn_compress.models.zoo import build_model
from cnn_compress.train.config import FinetuneConfig, TrainConfig
from cnn_compress.train.loop import evaluate, setup_torch, train_model


def _train(ds, amp: str, device: str = "cpu", epochs: int = 6, steps: int = 0):
    setup_torch(0, 2)
    model = build_model("resnet8", num_classes=10, width=8)
    cfg = TrainConfig(epochs=epochs, steps_per_epoch=steps, batch_size=32, lr=0.05, device=device, amp=amp)
    return model, train_model(model, ds, cfg)


def test_bf16_autocast_trains_float32_weights_to_a_comparable_accuracy(tiny_dataset):
    fp32, _ = _train(tiny_dataset, "off")
    bf16, history = _train(tiny_dataset, "bf16")
    state, other = bf16.state_dict(), fp32.state_dict()
    assert all(v.dtype != torch.bfloat16 for v in state.values())  # autocast, not a bf16 model
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
    assert any(not torch.equal(state[k], other[k]) for k in state)  # the forward pass did run in bf16
    top1 = evaluate(bf16, tiny_dataset)["top1"], evaluate(fp32, tiny_dataset)["top1"]
    assert top1[0] > 25 and abs(top1[0] - top1[1]) < 15, top1  # it learns as float32 does (chance: 10%)


def test_bf16_training_is_reproducible(tiny_dataset):
    a, _ = _train(tiny_dataset, "bf16", epochs=2, steps=2)
    b, _ = _train(tiny_dataset, "bf16", epochs=2, steps=2)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_fp16_on_the_cpu_and_bad_values_are_named():
    with pytest.raises(ConfigError, match=r"^train.amp: fp16 autocast needs CUDA \(use bf16 on the CPU\)"):
        from cnn_compress.train.loop import Precision

        Precision(TrainConfig(amp="fp16"), torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"finetune.amp: must be one of off, bf16, fp16, got 'fp8'"):
        parse_section(FinetuneConfig, {"amp": "fp8"})
    assert parse_section(TrainConfig, yaml.safe_load("amp: off")).amp == "off"  # YAML 1.1 reads off as false
    assert parse_section(TrainConfig, {"amp": "bf16"}).amp == "bf16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast with a gradient scaler needs a CUDA GPU")
def test_fp16_with_a_gradient_scaler_on_cuda(tiny_dataset):
    model, history = _train(tiny_dataset, "fp16", device="cuda")
    assert all(v.dtype == torch.float32 for k, v in model.state_dict().items() if v.is_floating_point())
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
