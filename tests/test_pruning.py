import copy

import pytest
import torch

from cnn_compress.core.errors import ConfigError
from cnn_compress.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cnn_compress.models.zoo import MODELS, build_model, count_macs, count_params, head_name, model_names
from cnn_compress.prune.config import PruneConfig
from cnn_compress.prune.pruning import (
    PruneContext,
    global_sparsity,
    layer_sparsity,
    prune_model,
    sparsity_masks,
    structured_policy,
)
from cnn_compress.train.config import FinetuneConfig
from cnn_compress.train.loop import train_model


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


def _small(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    width = {"width": 8} if "width" in MODELS.meta(arch)["options"] else {}
    return build_model(arch, num_classes=10, **width).eval()


# The torchvision ImageNet variants are the same graphs at 1000-class scale: slow, not different.
ARCHS = [a for a in model_names() if not a.endswith("_imagenet") and a != "resnet110"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["l1_unstructured", "structured"])
def test_every_architecture_prunes_runs_and_trains(arch, method):
    model = _small(arch)
    x = torch.randn(4, 3, 32, 32)
    params0, macs0 = count_params(model)[0], count_macs(model, (3, 32, 32))
    ctx = PruneContext(x, torch.arange(4), head_name(arch))
    prune_model(model, PruneConfig(method=method, ratio=0.5), ctx)
    out = model(x)
    assert out.shape == (4, 10)
    if method == "structured":
        assert count_params(model)[0] < params0 and count_macs(model, (3, 32, 32)) < macs0
    else:
        assert abs(global_sparsity(model) - 50) <= 0.5
    model.train()
    torch.nn.functional.cross_entropy(model(x), torch.arange(4)).backward()  # still trains
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_option_a_resnet_prunes_block_internal_channels_only():
    """Plain global channel pruning breaks option-A ResNets; the automatic policy halves MACs."""
    model = build_model("resnet20").eval()
    assert structured_policy(model) == "block-internal"
    macs0 = count_macs(model, (3, 32, 32))
    prune_model(model, PruneConfig(method="structured", ratio=0.5), PruneContext.random("linear"))
    assert model.conv1.out_channels == 16 and model.linear.in_features == 64  # residual width kept
    assert all(b.conv1.out_channels < b.conv2.out_channels for s in (model.layer1, model.layer2, model.layer3)
               for b in s)
    assert 0.45 < count_macs(model, (3, 32, 32)) / macs0 < 0.56  # 40.6M -> ~20.8M
    assert structured_policy(build_model("resnet18")) == "all"


@pytest.mark.parametrize("arch", ["resnet20", "mobilenet_v2", "vgg16_bn"])
def test_structured_checkpoint_reloads_without_the_pruner(tmp_path, arch):
    model = _small(arch)
    prune_model(model, PruneConfig(method="structured", ratio=0.4, importance="l2", round_to=2),
                PruneContext.random(head_name(arch)))
    ckpt = Checkpoint(model, arch, {"num_classes": 10} | ({"width": 8} if arch == "resnet20" else {}),
                      [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3, (3, 32, 32))
    save_checkpoint(tmp_path / "p.pt", ckpt)
    loaded = load_checkpoint(tmp_path / "p.pt").model  # plain resize from the saved shapes
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(loaded(x), model.eval()(x))
    assert count_params(loaded) == count_params(model)


@pytest.mark.parametrize("importance", ["l1", "taylor", "bn_scale"])
def test_structured_importances_and_layer_scope(importance):
    model = _small("resnet18")
    c0 = model.layer1[0].conv1.out_channels
    prune_model(model, PruneConfig(method="structured", ratio=0.5, scope="layer", importance=importance),
                PruneContext.random("fc"))
    assert model.layer1[0].conv1.out_channels == c0 // 2  # uniform: every layer at the ratio
    assert model.fc.out_features == 10


def test_structured_ratio_zero_is_identity_and_bad_ignore_is_clear():
    model = _small("resnet18")
    state = copy.deepcopy(model.state_dict())
    prune_model(model, PruneConfig(method="structured", ratio=0.0), PruneContext.random("fc"))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="prune.ignore: 'layer9' names no conv or linear layer"):
        prune_model(model, PruneConfig(method="structured", ignore=("layer9",)), PruneContext.random("fc"))
    with pytest.raises(ConfigError, match=r"prune.ratio: must be in \[0, 1\), got 1.0"):
        PruneConfig(method="structured", ratio=1.0)


def test_user_ignored_layers_keep_their_channels():
    model = _small("vgg16_bn")
    prune_model(model, PruneConfig(method="structured", ratio=0.5, ignore=("features.0",)),
                PruneContext.random("classifier"))
    assert model.features[0].out_channels == 64 and model.features[3].out_channels < 64


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_leaves_ignored_layers_dense(scope):
    model = build_model("resnet8", num_classes=10, width=8)
    prune_model(model, PruneConfig(ratio=0.7, scope=scope, ignore=("layer1", "linear")))
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            zeros = float((m.weight == 0).float().mean())
            assert (zeros == 0) == (name.startswith("layer1.") or name == "linear"), (name, zeros)
    with pytest.raises(ConfigError, match="prune.ignore: 'layer9' names no conv or linear layer"):
        prune_model(build_model("resnet8", num_classes=10, width=8), PruneConfig(ignore=("layer9",)))


@pytest.mark.parametrize("method", ["l1_unstructured", "structured"])
def test_iterative_schedule_steps_to_the_target(method):
    model = _small("resnet18")
    seen = []

    def after_step(m, k):
        seen.append((k, global_sparsity(m) if method == "l1_unstructured" else count_params(m)[0]))

    cfg = PruneConfig(method=method, ratio=0.8, schedule="iterative", steps=4)
    prune_model(model, cfg, PruneContext.random("fc"), after_step)
    assert [k for k, _ in seen] == [1, 2, 3, 4]
    values = [v for _, v in seen]
    if method == "l1_unstructured":
        assert [round(v) for v in values] == [20, 40, 60, 80]
    else:
        assert values == sorted(values, reverse=True) and values[0] > values[-1]


def test_iterative_with_training_between_steps_keeps_zeros(tiny_dataset, tiny_checkpoint):
    model = copy.deepcopy(tiny_checkpoint.model)
    cfg = FinetuneConfig(epochs=1, lr=0.02, device="cpu")
    prune_model(model, PruneConfig(ratio=0.6, schedule="iterative", steps=3), None,
                lambda m, k: train_model(m, tiny_dataset, cfg, masks=sparsity_masks(m)))
    assert abs(global_sparsity(model) - 60) <= 0.5
