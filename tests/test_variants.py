"""Variants: overrides resolved per stage, errors named by key, and the grid tool."""
import json
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from cnn_compress.core.config import load_resolved
from cnn_compress.core.errors import ConfigError
from cnn_compress.prune.config import PruneConfig
from cnn_compress.quantize.config import FixedConfig, QuantizeConfig
from cnn_compress.train.config import FinetuneConfig
from cnn_compress.variants.resolve import resolve_all, write_configs

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def resolved(variants: dict, **sections) -> dict:
    return resolve_all(BASE | sections | {"variants": variants})


def test_a_variant_overrides_keys_and_inherits_the_rest():
    out = resolved({"main": {}, "r3": {"prune": {"ratio": 0.3}, "quantize": {"formats": ["fixed3"]}}})
    assert out["main"]["prune"]["prune"]["ratio"] == 0.5
    assert out["r3"]["prune"]["prune"] == out["main"]["prune"]["prune"] | {"ratio": 0.3}
    assert out["r3"]["finetune"] == out["main"]["finetune"]  # the same resolved file: nothing re-runs
    assert list(out["r3"]["quantize"]["quantize"]["formats"]) == ["fixed3"]
    assert out["r3"]["quantize"]["quantize"]["formats"]["fixed3"]["bits"] == 3


def test_each_stage_sees_only_the_sections_it_reads():
    out = resolved({"main": {}, "plain": {"quantize": {"formats": ["fp32", "int8_static"]}},
                    "iter": {"prune": {"schedule": "iterative", "steps": 2, "step_epochs": 1}},
                    "aq": {"prune": {"order": "after_quantize"}, "quantize": {"formats": ["fp32"]}}})
    assert set(out["plain"]["prune"]) == {"prune"}  # one-shot: the finetune section is not read
    assert set(out["iter"]["prune"]) == {"prune", "finetune"}  # trains between steps
    assert set(out["plain"]["quantize"]) == {"quantize"}  # no format trains
    assert set(out["main"]["quantize"]) == {"quantize", "finetune"}  # int8_qat trains
    assert set(out["aq"]["quantize"]) == {"quantize", "prune"}  # prunes each artifact
    assert all(set(out["main"][s]) == {s} for s in ("finetune", "export", "benchmark"))


def test_resolved_files_round_trip_into_the_stage_configs(tmp_path):
    out = resolved({"main": {"quantize": {"formats": {"w3": {"type": "fixed", "bits": 3, "scheme": "asymmetric"}}},
                             "finetune": {"by_ratio": [{"upto": 0.5, "epochs": 2, "lr": 0.01}]}}})
    paths = write_configs(out, tmp_path)
    assert sorted(p.name for p in paths) == ["benchmark.json", "export.json", "finetune.json", "prune.json",
                                             "quantize.json"]
    q, f, p = load_resolved(tmp_path / "main/quantize.json", QuantizeConfig, FinetuneConfig, PruneConfig)
    assert q.formats == (("w3", FixedConfig(bits=3, scheme="asymmetric")),) and p is None and f is None
    (f,) = load_resolved(tmp_path / "main/finetune.json", FinetuneConfig)
    assert f.for_ratio(0.5).epochs == 2
    before = (tmp_path / "main/prune.json").read_bytes()
    write_configs(out, tmp_path)
    assert (tmp_path / "main/prune.json").read_bytes() == before  # same settings, same bytes


@pytest.mark.parametrize(("variants", "message"), [
    ({"main": {"prune": {"ratio": 2}}}, r"^variants\.main\.prune\.ratio: must be in \[0, 1\)"),
    ({"main": {"prune": {"ratoi": 0.3}}}, r"^variants\.main\.prune\.ratoi: unknown key \(did you mean 'ratio'\?\)"),
    ({"main": {"train": {"epochs": 3}}}, r"^variants\.main\.train: a variant overrides only"),
    ({"main": {"prune": 0.3}}, r"^variants\.main\.prune: must be a mapping of keys"),
    ({"main": ["prune"]}, r"^variants\.main: must be a mapping of sections"),
    ({"-x": {}}, r"^variants\.-x: a variant name"),
    ({"main": {"quantize": {"formats": {"f": {"type": "fixed", "bits": 1}}}}},
     r"^variants\.main\.quantize\.formats\.f\.bits: must be in \[2, 8\], got 1"),
])
def test_bad_variants_name_the_key(variants, message):
    with pytest.raises(ConfigError, match=message):
        resolved(variants)


def test_a_bad_base_key_is_named_as_such():
    with pytest.raises(ConfigError, match=r"^prune\.ratio: must be in"):
        resolved({"main": {}}, prune={"ratio": 3})
    with pytest.raises(ConfigError, match=r"^variants: must map at least one variant"):
        resolve_all(BASE | {"variants": None})


def tool(tmp_path, *args):
    return subprocess.run([sys.executable, str(ROOT / "tools/variants.py"), "--params", str(tmp_path / "params.yaml"),
                           *args], capture_output=True, text=True)


def test_grid_tool_writes_named_variants_and_keeps_the_rest_of_the_file(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    proc = tool(tmp_path, "grid", "g", "prune.ratio=0.3,0.7", "prune.order=before_quantize,after_quantize",
                "--set", "quantize.formats=[fp32, int8_static]")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "params.yaml").read_text()
    assert "# Shared by every variant" in text  # comments above the variants block survive
    variants = yaml.safe_load(text)["variants"]
    assert list(variants) == ["main", "g-ratio0.3-before_quantize", "g-ratio0.3-after_quantize",
                              "g-ratio0.7-before_quantize", "g-ratio0.7-after_quantize"]
    assert variants["g-ratio0.7-after_quantize"] == {"prune": {"ratio": 0.7, "order": "after_quantize"},
                                                     "quantize": {"formats": ["fp32", "int8_static"]}}
    # re-running a grid replaces its points; formats builds a bits x scheme grid inside one variant
    assert tool(tmp_path, "grid", "g", "prune.ratio=0.4").returncode == 0
    assert tool(tmp_path, "formats", "main", "bits=2,4", "scheme=symmetric,asymmetric").returncode == 0
    variants = yaml.safe_load((tmp_path / "params.yaml").read_text())["variants"]
    assert list(variants) == ["main", "g-0.4"]  # one axis: named by its value
    assert sorted(variants["main"]["quantize"]["formats"]) == ["fixed2_asymmetric", "fixed2_symmetric",
                                                               "fixed4_asymmetric", "fixed4_symmetric"]
    resolve_all(yaml.safe_load((tmp_path / "params.yaml").read_text()))
    assert tool(tmp_path, "drop", "g").returncode == 0
    assert list(yaml.safe_load((tmp_path / "params.yaml").read_text())["variants"]) == ["main"]


def test_grid_tool_refuses_bad_values_without_writing(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    before = (tmp_path / "params.yaml").read_text()
    proc = tool(tmp_path, "grid", "g", "prune.ratio=0.3,1.5")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: variants.g-1.5.prune.ratio: must be in [0, 1), got 1.5"
    proc = tool(tmp_path, "grid", "g", "prune.ratio")
    assert proc.returncode == 2 and "expected KEY=VALUE" in proc.stderr
    assert (tmp_path / "params.yaml").read_text() == before
    assert json.dumps(yaml.safe_load(before)["variants"]) == '{"main": {}}'
