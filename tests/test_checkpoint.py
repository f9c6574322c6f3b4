import pytest
import torch

from cnn_compress.core.errors import CheckpointError
from cnn_compress.models.checkpoint import load_checkpoint, payload_digest, save_checkpoint


def test_round_trip_is_self_describing(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint.derive(tiny_checkpoint.model, "prune", {"ratio": 0.5})
    save_checkpoint(tmp_path / "m.pt", ckpt)
    back = load_checkpoint(tmp_path / "m.pt")
    assert (back.arch, back.arch_args, back.class_names) == ("resnet8", ckpt.arch_args, ckpt.class_names)
    assert back.mean == ckpt.mean and back.history[-1] == {"stage": "prune", "config": {"ratio": 0.5}}
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back.model(x), tiny_checkpoint.model.eval()(x))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_checkpoint(tiny_checkpoint, tmp_path):
    save_checkpoint(tmp_path / "m.pt", tiny_checkpoint)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or not a torch checkpoint"):
        load_checkpoint(tmp_path / "m.pt")


def test_foreign_checkpoint(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a cnn-compress checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_weights_that_do_not_fit(tiny_checkpoint, tmp_path):
    save_checkpoint(tmp_path / "m.pt", tiny_checkpoint)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["arch"] = "resnet20"
    payload["digest"] = payload_digest(payload)  # a consistent file, not a damaged one
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="weights do not fit resnet20"):
        load_checkpoint(tmp_path / "bad.pt")
