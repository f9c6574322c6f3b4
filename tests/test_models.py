import os
from pathlib import Path

import pytest
import torch
from torchvision import models as tvm

from cnn_compress.core.errors import ConfigError
from cnn_compress.models.checkpoint import CheckpointError, load_pretrained, read_state_dict
from cnn_compress.models.zoo import MODELS, build_model, count_macs, count_params, head_name, model_names
from cnn_compress.train.loop import freeze

SHARED = Path(os.environ.get("CNN_COMPRESS_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _small(arch: str, num_classes: int = 7) -> torch.nn.Module:
    width = {"width": 4} if "width" in MODELS.meta(arch)["options"] else {}
    return build_model(arch, num_classes=num_classes, **width)


@pytest.mark.parametrize("arch", model_names())
def test_forward_and_backward(arch):
    model = _small(arch)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    head = dict(model.named_modules())[head_name(arch)]
    assert head.out_features == 7  # the registry's head name points at the classifier


@pytest.mark.parametrize(
    ("arch", "params"),
    [("resnet20", 0.27e6), ("resnet56", 0.85e6), ("resnet18", 11.17e6), ("vgg16_bn", 14.73e6),
     ("mobilenet_v2", 2.24e6)],
)
def test_published_parameter_counts(arch, params):
    total, _ = count_params(build_model(arch, num_classes=10))
    assert round(total / 1e6, 2) == round(params / 1e6, 2)


@pytest.mark.parametrize(("arch", "reference"), [("resnet18_imagenet", tvm.resnet18),
                                                 ("mobilenet_v2_imagenet", tvm.mobilenet_v2),
                                                 ("vgg16_bn_imagenet", tvm.vgg16_bn)])
def test_imagenet_variants_take_torchvision_state_dicts(arch, reference):
    """Same names and shapes as torchvision, so its published weights load as model.pretrained."""
    ours, theirs = build_model(arch, num_classes=1000).state_dict(), reference().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_resnet18_imagenet_computes_what_torchvision_computes():
    """Functional ReLUs (for the PT2E quantizer) change nothing: same outputs for the same weights."""
    torch.manual_seed(0)
    theirs = tvm.resnet18(num_classes=10).eval()
    ours = build_model("resnet18_imagenet", num_classes=10).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet20", "resnet18", "mobilenet_v2", "vgg16_bn"])
def test_cifar_architectures_take_the_x86_int8_quantizer(arch, tmp_path):
    """int8_static (torchao PT2E, X86InductorQuantizer) builds for every CIFAR architecture."""
    from cnn_compress.core.config import parse_section
    from cnn_compress.models.checkpoint import Checkpoint
    from cnn_compress.quantize.config import QuantizeConfig
    from cnn_compress.quantize.formats import QuantContext, quantize_all
    from cnn_compress.runtimes.runners import load_runner

    model = build_model(arch, num_classes=10).eval()
    ckpt = Checkpoint(model, arch, {"num_classes": 10}, [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3, (3, 32, 32))
    calib = torch.randn(4, 3, 32, 32)
    quantize_all(ckpt, parse_section(QuantizeConfig, {"formats": ["int8_static"]}), QuantContext(calib), tmp_path)
    assert load_runner(tmp_path / "int8_static.pt2").predict(calib).shape == (4, 10)


def test_input_size_resizes_inside_the_model():
    model = build_model("resnet18_imagenet", num_classes=10, input_size=64).eval()
    seen = []
    model.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
    model(torch.randn(1, 3, 32, 32))
    assert seen == [64]


def test_resnet20_macs():
    assert count_macs(build_model("resnet20"), (3, 32, 32)) == 40_551_040  # the published ~41M


def test_unknown_arch_and_wrong_option_are_config_errors():
    with pytest.raises(ConfigError, match="model.arch: unknown architecture 'resnet21'"):
        build_model("resnet21")
    with pytest.raises(ConfigError, match="model.width: not an option of resnet18"):
        build_model("resnet18", num_classes=10, width=8)


def _save(tmp_path, obj, name="w.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_pretrained_accepts_plain_wrapped_and_module_prefixed(tmp_path):
    src = build_model("resnet8", num_classes=10)
    state = src.state_dict()
    for obj in (state, {"state_dict": state, "epoch": 3}, {f"module.{k}": v for k, v in state.items()}):
        model = build_model("resnet8", num_classes=10)
        assert load_pretrained(model, _save(tmp_path, obj), "linear", reset_head=False) == []
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), state.values(), strict=True))


def test_pretrained_head_mismatch_needs_reset_head(tmp_path):
    path = _save(tmp_path, build_model("resnet8", num_classes=10).state_dict())
    model = build_model("resnet8", num_classes=5)
    with pytest.raises(CheckpointError, match=r"shape \(file vs model\): linear.bias \(10,\) vs \(5,\).*reset_head"):
        load_pretrained(model, path, "linear", reset_head=False)
    fresh = model.linear.weight.clone()
    assert load_pretrained(model, path, "linear", reset_head=True) == ["linear.bias", "linear.weight"]
    assert torch.equal(model.linear.weight, fresh)  # head kept its new init
    assert torch.equal(model.conv1.weight, read_state_dict(path)["conv1.weight"])


def test_wrong_checkpoint_lists_mismatches(tmp_path):
    path = _save(tmp_path, build_model("resnet20").state_dict())
    with pytest.raises(CheckpointError, match=r"weights do not fit this model: unexpected: layer1\.1\.bn1"):
        load_pretrained(build_model("resnet8"), path, "linear", reset_head=False)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="corrupt or not a torch weights file"):
        load_pretrained(build_model("resnet8"), tmp_path / "junk.pth", "linear", reset_head=False)
    with pytest.raises(CheckpointError, match="no state_dict of tensors"):
        load_pretrained(build_model("resnet8"), _save(tmp_path, {"acc": 1.0}), "linear", reset_head=False)


def test_freeze_prefixes_and_rejects_typos():
    model = build_model("resnet18", num_classes=10)
    frozen = freeze(model, ("conv1", "bn1", "layer1", "layer2"))
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4", "fc"} and frozen > 0
    with pytest.raises(ConfigError, match="model.freeze: 'layer9' matches no parameter"):
        freeze(model, ("layer9",))


@pytest.mark.parametrize("depth", [20, 56])
def test_published_checkpoint_keys_load_exactly(depth):
    path = SHARED / "weights" / f"resnet{depth}-cifar10-akamaster.th"
    if not path.exists():
        pytest.skip(f"{path} not present (shared weights are optional)")
    model = build_model(f"resnet{depth}")
    load_pretrained(model, path, "linear", reset_head=False)  # strict: any stray key raises
    assert torch.equal(model.linear.weight, read_state_dict(path)["linear.weight"])
