"""Depth pruning (``prune.method: blocks``): whole residual blocks removed, chosen by measured effect."""
import copy

import pytest
import torch

from cnn_compress.core.errors import CheckpointError, ConfigError
from cnn_compress.models.blocks import RemovedBlock, removable_blocks, removed_blocks
from cnn_compress.models.checkpoint import Checkpoint, load_checkpoint, payload_digest, save_checkpoint
from cnn_compress.models.zoo import build_model, count_macs, count_params
from cnn_compress.prune.config import PruneConfig
from cnn_compress.prune.pruning import PruneContext, prune_model


@pytest.mark.parametrize(("arch", "count"), [("resnet20", 7), ("resnet56", 25), ("resnet18", 5), ("mobilenet_v2", 10)])
def test_only_blocks_with_an_identity_shortcut_are_removable(arch, count):
    blocks = removable_blocks(build_model(arch))
    assert len(blocks) == count
    assert "layer2.0" not in blocks  # the first block of a stage downsamples: its shortcut is not the identity


def _model_and_context() -> tuple[torch.nn.Module, PruneContext]:
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    images = torch.randn(64, 3, 32, 32)
    with torch.no_grad():  # labels = the model's own answers: a removal's loss is its damage
        labels = model(images).argmax(1)
    return model, PruneContext(images[:8], labels[:8], "linear", held_out=(images, labels))


def test_the_block_whose_removal_costs_least_goes_first():
    model, ctx = _model_and_context()
    with torch.no_grad():  # layer2.2's residual branch now adds nothing: removing it changes no output
        model.layer2[2].bn2.weight.zero_()
        model.layer2[2].bn2.bias.zero_()
    pruned = prune_model(copy.deepcopy(model), PruneConfig(method="blocks", ratio=1 / 7), ctx)
    assert removed_blocks(pruned) == ["layer2.2"]
    torch.testing.assert_close(pruned(ctx.held_out[0]), model(ctx.held_out[0]))


def test_iterative_depth_pruning_reaches_the_ratio_and_cuts_macs():
    model, ctx = _model_and_context()
    steps = []
    cfg = PruneConfig(method="blocks", ratio=0.5, schedule="iterative", steps=2)
    pruned = prune_model(copy.deepcopy(model), cfg, ctx, after_step=lambda m, k: steps.append(len(removed_blocks(m))))
    assert steps == [2, 4]  # half of 7 blocks, rounded half up, in two steps
    assert count_macs(pruned, (3, 32, 32)) < 0.8 * count_macs(model, (3, 32, 32))
    assert count_params(pruned)[0] < count_params(model)[0]


def test_a_model_without_removable_blocks_stops_with_one_line():
    with pytest.raises(ConfigError, match="no removable residual block"):
        prune_model(build_model("vgg16_bn"), PruneConfig(method="blocks", ratio=0.5), PruneContext.random("classifier"))
    with pytest.raises(ConfigError, match="outside prune.ignore"):
        prune_model(build_model("resnet20"), PruneConfig(method="blocks", ratio=0.5, ignore=("layer1", "layer2", "layer3")),
                    PruneContext.random("linear"))


def _checkpoint(model: torch.nn.Module) -> Checkpoint:
    return Checkpoint(model, "resnet20", {}, [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3, (3, 32, 32))


def test_a_depth_pruned_checkpoint_rebuilds_the_shorter_network(tmp_path):
    model, ctx = _model_and_context()
    pruned = prune_model(copy.deepcopy(model), PruneConfig(method="blocks", ratio=0.5), ctx)
    save_checkpoint(tmp_path / "p.pt", _checkpoint(pruned))
    loaded = load_checkpoint(tmp_path / "p.pt")
    assert removed_blocks(loaded.model) == removed_blocks(pruned) and len(removed_blocks(pruned)) == 4
    assert all(isinstance(loaded.model.get_submodule(n), RemovedBlock) for n in removed_blocks(pruned))
    torch.testing.assert_close(loaded.model(ctx.example), pruned(ctx.example))
    # a checkpoint of an unpruned network has no such key: files written before depth pruning stay byte-equal
    save_checkpoint(tmp_path / "dense.pt", _checkpoint(model))
    assert "removed_blocks" not in torch.load(tmp_path / "dense.pt", weights_only=True)


def test_a_checkpoint_naming_a_block_the_network_lacks_is_one_line(tmp_path):
    save_checkpoint(tmp_path / "p.pt", _checkpoint(build_model("resnet20")))
    payload = torch.load(tmp_path / "p.pt", weights_only=True)
    payload["removed_blocks"] = ["layer9.0"]
    payload["digest"] = payload_digest(payload)  # a consistent file, not a damaged one
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="removed block 'layer9.0'"):
        load_checkpoint(tmp_path / "bad.pt")
