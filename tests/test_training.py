import hashlib

import torch

from cnn_compress.models.checkpoint import Checkpoint, save_checkpoint
from cnn_compress.models.zoo import build_model
from cnn_compress.train.config import TrainConfig
from cnn_compress.train.loop import cosine_lr, evaluate, setup_torch, train_model


def _train_once(ds, tmp_path, name):
    setup_torch(0, 2)
    args = {"num_classes": ds.num_classes, "width": 8}
    model = build_model("resnet8", **args)
    history = train_model(model, ds, TrainConfig(epochs=2, device="cpu"))
    path = tmp_path / name
    save_checkpoint(path, Checkpoint(model, "resnet8", args, ds.class_names, ds.mean, ds.std, (3, 32, 32)))
    return hashlib.md5(path.read_bytes()).hexdigest(), history


def test_same_seed_gives_byte_identical_checkpoints(tiny_dataset, tmp_path):
    a, hist = _train_once(tiny_dataset, tmp_path, "a.pt")
    b, _ = _train_once(tiny_dataset, tmp_path, "b.pt")
    assert a == b
    assert len(hist) == 2 and {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc"} <= set(hist[0])


def test_training_learns(tiny_dataset, tiny_checkpoint):
    assert evaluate(tiny_checkpoint.model, tiny_dataset, "test")["top1"] > 40  # chance is 10%


def test_cosine_schedule_ends_near_zero():
    assert cosine_lr(0.1, 0, 100) == 0.1
    assert abs(cosine_lr(0.1, 50, 100) - 0.05) < 1e-12
    assert cosine_lr(0.1, 100, 100) < 1e-12


def test_frozen_layers_and_their_batchnorm_stay_fixed(tiny_dataset):
    from cnn_compress.train.loop import freeze

    setup_torch(0, 2)
    model = build_model("resnet8", num_classes=tiny_dataset.num_classes, width=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    freeze(model, ("conv1", "bn1", "layer1"))
    train_model(model, tiny_dataset, TrainConfig(epochs=1, device="cpu"))
    after = model.state_dict()
    for k, v in before.items():
        fixed = k.split(".")[0] in ("conv1", "bn1", "layer1")
        assert torch.equal(after[k], v) == fixed, k  # frozen: weights and running stats; others moved


def test_steps_per_epoch_caps_the_batches(tiny_dataset, monkeypatch):
    """A short schedule: each epoch is exactly ``steps_per_epoch`` optimizer steps, the cosine
    schedule spans those steps (the last lr is near zero), the full epoch when the cap is larger."""
    steps = []
    original = torch.optim.SGD.step

    def counting(self, *args, **kwargs):
        steps.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counting)
    model = build_model("resnet8", num_classes=tiny_dataset.num_classes, width=8)
    train_model(model, tiny_dataset, TrainConfig(epochs=2, steps_per_epoch=3, batch_size=16, device="cpu"))
    assert len(steps) == 6 and steps[-1] < 0.1 * steps[0]
    steps.clear()
    full = -(-len(tiny_dataset.splits["train"]) // 16)
    train_model(model, tiny_dataset, TrainConfig(epochs=1, steps_per_epoch=10_000, batch_size=16, device="cpu"))
    assert len(steps) == full
