from pathlib import Path

import pytest

from cnn_compress.config import (
    BenchmarkConfig,
    FinetuneConfig,
    PruneConfig,
    QuantizeConfig,
    TrainConfig,
    parse_section,
    read_params,
    stage_args,
)
from cnn_compress.errors import ConfigError


def test_defaults_match_params_yaml():
    """params.yaml states every key of every section, so DVC can track each one."""
    import dataclasses

    from cnn_compress.config import SECTIONS

    params = read_params(Path(__file__).parents[1] / "params.yaml")
    for name, cls in SECTIONS.items():
        assert set(params[name]) == {f.name for f in dataclasses.fields(cls)}, name
        parse_section(cls, params[name])  # and every value is valid


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
        (PruneConfig, {"ratios": [0.3, 1.2]}, r"prune\.ratios\[1\]: must be in \[0, 1\), got 1\.2"),
        (PruneConfig, {"ratios": [0.3, 0.3]}, r"prune\.ratios: has duplicates"),
        (FinetuneConfig, {"by_ratio": [{"upto": 0.5, "epoch": 3}]},
         r"finetune\.by_ratio\[0\]\.epoch: unknown key \(did you mean 'epochs'\?\)"),
        (FinetuneConfig, {"by_ratio": [{"upto": 0.9}, {"upto": 0.5}]}, r"finetune\.by_ratio: rows must be sorted"),
        (FinetuneConfig, {"by_ratio": [{"lr": "x"}]}, r"finetune\.by_ratio\[0\]\.lr: must be a number"),
        (FinetuneConfig, {"by_ratio": [3]}, r"finetune\.by_ratio\[0\]: must be a mapping"),
        (QuantizeConfig, {"fixed_granularity": "per_row"}, r"quantize\.fixed_granularity: must be one of"),
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


def test_stage_args_ratio_and_dir():
    args = stage_args(ratio=True, argv=["--ratio", "0.3", "--dir", "sweeps/0.3"])
    assert args.ratio == 0.3 and str(args.dir) == "sweeps/0.3"
    assert str(stage_args(argv=[]).dir) == "."
