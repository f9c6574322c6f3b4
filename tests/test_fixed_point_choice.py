"""The fixed-point study's one choice, the setting closest to the published drops, reads the `select`
split only (issue 31): made-up benchmark rows, published drops and settings; no pipeline."""
import pandas as pd
import pytest

from cnn_compress.core.config import parse_section
from cnn_compress.core.errors import ConfigError
from cnn_compress.studies.pruning_fixed_point_resnet20 import (
    FixedPointStudyConfig,
    Rows,
    ablation,
    choose_setting,
    with_choice_columns,
)

SETTINGS = {"near": {"layers": ["layer1"]}, "far": {"layers": ["layer1"], "activations": True}}
# published: FP 90%, drops of 0.5 / 1 / 2 points at 6 / 5 / 4 bits, both schemes
PUB = pd.DataFrame({"nbits": [6, 5, 4, 3, 2], "asymmetric_acc": [0.895, 0.89, 0.88, 0.8, 0.1],
                    "symmetric_acc": [0.895, 0.89, 0.88, 0.75, 0.1]})
PUB_BASE = 90.0


def _cfg(setting: str = "select") -> FixedPointStudyConfig:
    return parse_section(FixedPointStudyConfig, {"setting": setting, "settings": SETTINGS, "bits": [6, 5, 4]})


def _rows(select_drops: dict[str, float], report_drops: dict[str, float], selection: bool = True) -> Rows:
    """The dense variant: FP at 80% on both splits; each setting's q<b>_* artifacts dropped by the
    given points times the published drop (1.0 = exactly the published drop)."""
    def row(report: float, select: float) -> dict:
        return {"top1": report, **({"top1_select": select, "split": "report"} if selection else {})}

    arts = {"finetuned": row(80.0, 80.0)}
    for name in SETTINGS:
        for bits, drop in ((6, 0.5), (5, 1.0), (4, 2.0)):
            for scheme in ("asym", "sym"):
                arts[f"q{bits}_{scheme}_{name}"] = row(80.0 - drop * report_drops[name], 80.0 - drop * select_drops[name])
    return Rows([], {"dense": arts})


def test_the_setting_is_chosen_on_select_and_no_report_figure_moves_it():
    cfg = _cfg()
    choice = choose_setting(_rows({"near": 1.1, "far": 3.0}, {"near": 1.1, "far": 3.0}), cfg, PUB, PUB_BASE)
    assert (choice.setting, choice.closest, choice.split, choice.reported) == ("near", "near", "select", "report")
    # report figures that favour the other setting (every report label changed, say) change nothing
    flipped = choose_setting(_rows({"near": 1.1, "far": 3.0}, {"near": 9.0, "far": 1.0}), cfg, PUB, PUB_BASE)
    assert (flipped.setting, flipped.worst) == (choice.setting, choice.worst)
    # ... while select figures that favour it move the choice: the check can fail
    moved = choose_setting(_rows({"near": 4.0, "far": 1.2}, {"near": 1.1, "far": 3.0}), cfg, PUB, PUB_BASE)
    assert moved.setting == "far" and moved.worst["far"] == pytest.approx(1.2)


def test_a_named_setting_is_kept_and_the_select_verdict_shown_beside_it():
    rows = _rows({"near": 1.1, "far": 3.0}, {"near": 5.0, "far": 1.0})
    choice = choose_setting(rows, _cfg("far"), PUB, PUB_BASE)
    assert (choice.setting, choice.closest, choice.fixed) == ("far", "near", True)
    table = with_choice_columns(ablation(rows, _cfg("far"), PUB, 80.0, PUB_BASE), choice)
    mine = table.set_index("setting")
    assert mine.loc["far", "worst factor 4-6 bits"] == pytest.approx(1.0)  # on report: far looks best there
    assert mine.loc["near", "worst factor 4-6 bits, select"] == pytest.approx(1.1)  # on select, near is
    assert list(mine["in use"]) == ["", "", "yes"]  # published, near, far


def test_without_a_selection_split_the_choice_says_it_read_the_reported_split():
    choice = choose_setting(_rows({"near": 1.1, "far": 3.0}, {"near": 1.1, "far": 3.0}, selection=False), _cfg(),
                            PUB, PUB_BASE)
    assert (choice.split, choice.reported, choice.separate) == ("test", "test", False)
    table = with_choice_columns(pd.DataFrame({"setting": ["near", "far"]}), choice)
    assert list(table.columns) == ["setting", "in use"]  # no second verdict when both are one split


def test_select_needs_published_drops_and_settings():
    with pytest.raises(ConfigError, match="found no setting"):
        choose_setting(_rows({"near": 1, "far": 1}, {"near": 1, "far": 1}), _cfg(), None, None)
    with pytest.raises(ConfigError, match="needs settings"):
        parse_section(FixedPointStudyConfig, {"setting": "select"})
    with pytest.raises(ConfigError, match="is not one of settings"):
        _cfg("nearest")
