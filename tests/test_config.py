from pathlib import Path

import pytest

from cnn_compress.core.config import parse_section, read_params
from cnn_compress.core.errors import ConfigError
from cnn_compress.measure.config import BenchmarkConfig
from cnn_compress.prune.config import PruneConfig
from cnn_compress.quantize.config import QuantizeConfig
from cnn_compress.train.config import FinetuneConfig, TrainConfig


def test_defaults_match_params_yaml():
    """params.yaml states every key of every section, so DVC can track each one."""
    import dataclasses

    from cnn_compress.core.config import SECTIONS
    from cnn_compress.data.config import DataConfig
    from cnn_compress.models.config import ModelConfig
    from cnn_compress.sensitivity.config import SensitivityConfig
    from cnn_compress.variants.resolve import BASE_SECTIONS

    params = read_params(Path(__file__).parents[1] / "params.yaml")
    classes = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "sensitivity": SensitivityConfig}
    classes |= BASE_SECTIONS
    assert set(classes) | {"variants", "study"} == set(SECTIONS) == set(params)
    for name, cls in classes.items():
        assert set(params[name]) == {f.name for f in dataclasses.fields(cls)}, name
        assert parse_section(cls, params[name]) == cls(), name  # every value valid, and the code's default


def test_empty_params_file_is_an_error(tmp_path):
    (tmp_path / "params.yaml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: is empty"):
        read_params(tmp_path / "params.yaml")


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"^prune\.ratoi: unknown key \(did you mean 'ratio'\?\)$"):
        parse_section(PruneConfig, {"ratoi": 0.5})


@pytest.mark.parametrize(
    ("cls", "raw", "message"),
    [
        (PruneConfig, {"ratio": 1.0}, r"prune\.ratio: must be in \[0, 1\), got 1\.0"),
        (PruneConfig, {"ratio": -0.1}, r"prune\.ratio: must be in \[0, 1\)"),
        (PruneConfig, {"ratio": "half"}, r"prune\.ratio: must be a number"),
        (PruneConfig, {"scope": "local"}, r"prune\.scope: must be one of global, layer"),
        (TrainConfig, {"epochs": 2.5}, r"train\.epochs: must be an integer"),
        (TrainConfig, {"flip": "yes"}, r"train\.flip: must be true or false"),
        (BenchmarkConfig, {"batch_sizes": 4}, r"benchmark\.batch_sizes: must be a list"),
        (BenchmarkConfig, {"batch_sizes": [1, "x"]}, r"benchmark\.batch_sizes\[1\]: must be an integer"),
        (FinetuneConfig, {"by_ratio": [{"upto": 0.5, "epoch": 3}]},
         r"finetune\.by_ratio\[0\]\.epoch: unknown key \(did you mean 'epochs'\?\)"),
        (FinetuneConfig, {"by_ratio": [{"upto": 0.9}, {"upto": 0.5}]}, r"finetune\.by_ratio: rows must be sorted"),
        (FinetuneConfig, {"by_ratio": [{"lr": "x"}]}, r"finetune\.by_ratio\[0\]\.lr: must be a number"),
        (FinetuneConfig, {"by_ratio": [3]}, r"finetune\.by_ratio\[0\]: must be a mapping"),
        (QuantizeConfig, {"formats": {"fixed4": {"granularity": "per_row"}}},
         r"quantize\.formats\.fixed4\.granularity: must be one of per_channel, per_tensor"),
        (QuantizeConfig, {"formats": ["fixed9"]}, r"quantize\.formats\.fixed9\.bits: must be in \[2, 8\], got 9"),
        (QuantizeConfig, {"formats": ["int3"]}, r"quantize\.formats\.int3: cannot tell the format from the name"),
        (QuantizeConfig, {"formats": {"a": {"type": "int4"}}}, r"quantize\.formats\.a\.type: unknown format type 'int4'"),
        (QuantizeConfig, {"formats": {"int8_qat": {"epochs": 0}}}, r"quantize\.formats\.int8_qat\.epochs: must be >= 1"),
        (QuantizeConfig, {"formats": {"fp32": {"bits": 4}}}, r"quantize\.formats\.fp32\.bits: unknown key"),
        (QuantizeConfig, {"formats": []}, r"quantize\.formats: must name at least one format"),
        (QuantizeConfig, {"formats": ["fp32", "fp32"]}, r"quantize\.formats: has duplicates"),
    ],
)
def test_bad_values_are_rejected_with_the_key(cls, raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_section(cls, raw)


def test_lists_become_tuples_and_ints_widen_to_float():
    cfg = parse_section(BenchmarkConfig, {"batch_sizes": [1, 32], "max_seconds": 1})
    assert cfg.batch_sizes == (1, 32)
    assert isinstance(cfg.max_seconds, float)


def test_unknown_section(tmp_path):
    (tmp_path / "params.yaml").write_text("prun:\n  ratio: 0.5\n")
    with pytest.raises(ConfigError, match=r"^prun: unknown params section \(did you mean 'prune'\?\)"):
        read_params(tmp_path / "params.yaml")


def test_bad_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text("prune: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_params(tmp_path / "params.yaml")


def test_fine_tune_table_picks_the_first_covering_row():
    cfg = parse_section(FinetuneConfig, {"epochs": 5, "lr": 0.01, "by_ratio": [
        {"upto": 0.5, "epochs": 3, "lr": 0.01}, {"upto": 0.9, "epochs": 8, "lr": 0.02}]})
    assert (cfg.for_ratio(0.3).epochs, cfg.for_ratio(0.5).epochs) == (3, 3)
    assert (cfg.for_ratio(0.7).epochs, cfg.for_ratio(0.7).lr) == (8, 0.02)
    assert cfg.for_ratio(0.95) == cfg  # no row covers it: the section's own settings


def test_quantize_formats_take_a_list_or_typed_settings():
    from cnn_compress.quantize.config import FixedConfig, Int8StaticConfig

    cfg = parse_section(QuantizeConfig, {"formats": ["int8_static", "fixed3"]})
    assert cfg.formats == (("int8_static", Int8StaticConfig()), ("fixed3", FixedConfig(bits=3)))
    cfg = parse_section(QuantizeConfig, {"formats": {
        "w4_asym": {"type": "fixed", "bits": 4, "scheme": "asymmetric", "epochs": 2}}})
    (name, fmt), = cfg.formats
    assert name == "w4_asym" and fmt == FixedConfig(bits=4, scheme="asymmetric", epochs=2)
    assert cfg.trains() and fmt.describe() == "4-bit asym, per-channel, w+a, ft 2"
    assert FixedConfig(bits=4, layer_bits={"a": 3, "b": 5}).describe() == "mixed 3-5-bit sym, per-channel, w+a"
    assert FixedConfig(bits=6, allocation="sensitivity", avg_bits=3).describe().startswith("mixed <=6-bit (mean <= 3)")
    # round trip through the plain data the variants stage writes
    assert parse_section(QuantizeConfig, cfg.as_dict()) == cfg


def test_a_missing_section_is_named_not_silently_defaulted(capsys):
    from cnn_compress.core.config import load_section
    from cnn_compress.train.config import TrainConfig

    assert load_section(TrainConfig, {"data": {}}) == TrainConfig()
    assert "params.yaml has no 'train' settings" in capsys.readouterr().err
    load_section(TrainConfig, {"train": {"epochs": 3}})
    assert capsys.readouterr().err == ""
