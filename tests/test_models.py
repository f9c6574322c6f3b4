import os
from pathlib import Path

import pytest
import torch

from cnn_compress.models import build_model, count_macs, count_params, model_names

SHARED = Path(os.environ.get("CNN_COMPRESS_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.mark.parametrize("arch", model_names())
def test_forward_and_backward(arch):
    model = build_model(arch, num_classes=7, width=4)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("arch", "params"), [("resnet20", 0.27e6), ("resnet56", 0.85e6)])
def test_published_parameter_counts(arch, params):
    total, _ = count_params(build_model(arch))
    assert abs(total - params) / params < 0.01


def test_resnet20_macs():
    assert count_macs(build_model("resnet20"), (3, 32, 32)) == 40_551_040  # the published ~41M


def test_unknown_arch_is_a_config_error():
    from cnn_compress.errors import ConfigError

    with pytest.raises(ConfigError, match="model.arch: unknown architecture 'resnet21'"):
        build_model("resnet21")


@pytest.mark.parametrize("depth", [20, 56])
def test_published_checkpoint_keys_load_exactly(depth):
    path = SHARED / "weights" / f"resnet{depth}-cifar10-akamaster.th"
    if not path.exists():
        pytest.skip(f"{path} not present (shared weights are optional)")
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = build_model(f"resnet{depth}")
    model.load_state_dict(state, strict=True)  # raises on any missing, unexpected or misshapen key
    assert torch.equal(model.linear.weight, state["linear.weight"])
