"""Range estimators for fixed point: MSE-clipped weights, percentile / MSE activation ranges."""
import pytest
import torch

from cnn_compress.core.config import parse_section
from cnn_compress.core.errors import ConfigError
from cnn_compress.data.dataset import calibration_batch
from cnn_compress.quantize.config import FixedConfig, QuantizeConfig
from cnn_compress.quantize.fakequant import Grid
from cnn_compress.quantize.formats import fixed_point
from cnn_compress.quantize.ranges import mse_range, rounding_error


def _layer_error(ref, out) -> float:
    """Summed squared distance of every quantized layer's weight from its float original."""
    modules, originals = dict(out.model.named_modules()), dict(ref.model.named_modules())
    layers = out.history[-1]["config"]["layers"]
    return sum((modules[n].weight - originals[n].weight).pow(2).sum().item() for n in layers)


def test_mse_range_beats_min_max_when_an_outlier_stretches_the_grid():
    torch.manual_seed(0)
    x = torch.randn(4, 512)
    x[:, 0] = 12.0  # one outlier per row
    grid = Grid(3, symmetric=False)
    lo, hi = mse_range(x, grid)
    assert (hi < 12.0).all() and (lo <= 0).all()  # clipped below the outlier
    minmax = rounding_error(x, x.min(1, keepdim=True).values, x.max(1, keepdim=True).values, grid)
    assert (rounding_error(x, lo, hi, grid) < 0.75 * minmax).all()


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_mse_weights_sit_closer_to_the_float_weights(tiny_checkpoint, tiny_dataset, scheme):
    calib = calibration_batch(tiny_dataset, 2)
    plain = fixed_point(tiny_checkpoint, FixedConfig(bits=3, scheme=scheme, activations=False), calib)
    mse = fixed_point(tiny_checkpoint, FixedConfig(bits=3, scheme=scheme, activations=False, weight_range="mse"), calib)
    assert _layer_error(tiny_checkpoint, mse) < _layer_error(tiny_checkpoint, plain)
    assert mse.history[-1]["config"]["settings"]["weight_range"] == "mse"  # the artifact says how it was made
    for w in (m.weight for m in mse.model.modules() if isinstance(m, torch.nn.Conv2d)):
        assert all(row.unique().numel() <= 8 for row in w.reshape(w.shape[0], -1))  # still 3 bits per channel


@pytest.mark.parametrize("act_range", ["percentile", "mse"])
def test_clipped_activation_ranges_lie_inside_min_max(tiny_checkpoint, tiny_dataset, act_range):
    calib = calibration_batch(tiny_dataset, 4)
    plain = fixed_point(tiny_checkpoint, FixedConfig(bits=4, scheme="asymmetric"), calib)
    clipped = fixed_point(tiny_checkpoint, FixedConfig(bits=4, scheme="asymmetric", act_range=act_range,
                                                       act_percentile=99.0), calib)
    assert set(plain.fake_quant) == set(clipped.fake_quant)
    narrower = 0
    for name, spec in clipped.fake_quant.items():
        ref = plain.fake_quant[name]
        assert ref["lo"] - 1e-6 <= spec["lo"] <= 0 <= spec["hi"] <= ref["hi"] + 1e-6
        narrower += spec["hi"] - spec["lo"] < ref["hi"] - ref["lo"] - 1e-6
    assert narrower > 0


@pytest.mark.parametrize(("settings", "key"), [({"act_percentile": 40}, "act_percentile"),
                                               ({"weight_range": "percentile"}, "weight_range"),
                                               ({"act_range": "kl"}, "act_range")])
def test_bad_range_settings_name_the_key(settings, key):
    with pytest.raises(ConfigError, match=rf"quantize\.formats\.q4\.{key}"):
        parse_section(QuantizeConfig, {"formats": {"q4": {"type": "fixed", **settings}}})
