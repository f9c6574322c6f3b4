import copy

import pytest
import torch

from cnn_compress.config import FinetuneConfig, PruneConfig
from cnn_compress.errors import ConfigError
from cnn_compress.models import build_model
from cnn_compress.pruning import global_sparsity, layer_sparsity, prune_model, sparsity_masks
from cnn_compress.training import train_model


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.8])
def test_global_sparsity_hits_target(ratio):
    model = prune_model(build_model("resnet20"), PruneConfig(ratio=ratio, scope="global"))
    assert abs(global_sparsity(model) - 100 * ratio) <= 0.5
    per_layer = [r["sparsity"] for r in layer_sparsity(model)]
    assert max(per_layer) - min(per_layer) > 5  # one global threshold: layers differ


def test_layer_scope_prunes_every_layer_to_ratio():
    model = prune_model(build_model("resnet20"), PruneConfig(ratio=0.6, scope="layer"))
    for row in layer_sparsity(model):
        assert abs(row["sparsity"] - 60) <= 100 / row["params"] + 1e-9, row


def test_masks_are_permanent_and_smallest_weights_go():
    torch.manual_seed(0)
    model = build_model("resnet8", width=4)
    before = copy.deepcopy(model.linear.weight.detach())
    prune_model(model, PruneConfig(ratio=0.5, scope="layer"))
    assert not any("mask" in name or "orig" in name for name, _ in model.named_parameters())
    kept = model.linear.weight != 0
    assert before.abs()[kept].min() >= before.abs()[~kept].max()


def test_ratio_zero_is_identity():
    model = build_model("resnet8", width=4)
    state = copy.deepcopy(model.state_dict())
    prune_model(model, PruneConfig(ratio=0.0))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_unknown_method():
    with pytest.raises(ConfigError, match="prune.method: unknown method 'l3'"):
        prune_model(build_model("resnet8"), PruneConfig(method="l3"))


def test_finetuning_keeps_pruned_weights_at_zero(tiny_dataset, tiny_checkpoint):
    model = prune_model(copy.deepcopy(tiny_checkpoint.model), PruneConfig(ratio=0.7))
    masks = sparsity_masks(model)
    before = copy.deepcopy(model.state_dict())
    train_model(model, tiny_dataset, FinetuneConfig(epochs=1, lr=0.05, device="cpu"), masks=masks)
    assert abs(global_sparsity(model) - 70) <= 0.5
    changed = [k for k in masks if not torch.equal(before[k], model.state_dict()[k])]
    assert changed  # the kept weights did train
    for name, mask in masks.items():
        assert torch.all(dict(model.named_parameters())[name][mask == 0] == 0)
