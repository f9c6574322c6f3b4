"""Chained pruning passes (``prune.then``): depth and width in one variant, each pass on what the last left."""
import copy

import pytest
import torch

from cnn_compress.core.config import parse_section
from cnn_compress.core.errors import ConfigError
from cnn_compress.models.blocks import removed_blocks
from cnn_compress.models.checkpoint import load_checkpoint, save_checkpoint
from cnn_compress.models.zoo import count_macs
from cnn_compress.prune.config import PruneConfig
from cnn_compress.prune.run import prune_checkpoint


def test_a_chained_pass_parses_and_describes_itself():
    cfg = parse_section(PruneConfig, {"method": "blocks", "ratio": 0.5, "then": {"method": "structured", "ratio": 0.3}})
    assert [p.method for p in cfg.passes()] == ["blocks", "structured"]
    assert cfg.then.ratio == 0.3 and cfg.label() == "blocks+structured 0.3"
    assert parse_section(PruneConfig, {"then": None}).passes() == [PruneConfig()]


@pytest.mark.parametrize(("then", "message"), [
    ({"raito": 0.3}, "prune.then.raito: unknown key (did you mean 'ratio'?)"),
    ({"ratio": 1.5}, "prune.then.ratio: must be in [0, 1), got 1.5"),
    ({"then": {"steps": 0}}, "prune.then.then.steps: must be >= 1, got 0"),
    ({"allocation": "sensitivity"}, "prune.then.allocation: per-layer ratios are resolved for the first pass only"),
    ("structured", "prune.then: must be a mapping, got 'structured'"),
])
def test_a_bad_chained_pass_is_one_line_naming_its_key(then, message):
    with pytest.raises(ConfigError) as exc:
        parse_section(PruneConfig, {"method": "blocks", "then": then})
    assert str(exc.value) == message


def test_chained_passes_prune_before_quantization_only():
    with pytest.raises(ConfigError, match="^prune.then: chained passes prune before quantization"):
        parse_section(PruneConfig, {"order": "after_quantize", "then": {"ratio": 0.2}})


def test_depth_then_width_removes_a_block_and_channels_and_reloads(tiny_checkpoint, tiny_dataset, tmp_path):
    """Each pass alone, then both: the chain cuts more MACs than either, and its checkpoint rebuilds."""
    passes = {"blocks": {"method": "blocks", "ratio": 0.5}, "structured": {"method": "structured", "ratio": 0.5}}
    macs = {}
    for name, raw in [*passes.items(), ("both", passes["blocks"] | {"then": passes["structured"]})]:
        ckpt = copy.deepcopy(tiny_checkpoint)
        pruned, summary = prune_checkpoint(ckpt, tiny_dataset, parse_section(PruneConfig, raw), None)
        macs[name] = summary["macs"]
    assert macs["both"] < min(macs["blocks"], macs["structured"])
    assert removed_blocks(pruned.model) == ["layer1.0"]  # ResNet-8's one block with an identity shortcut
    assert pruned.history[-1]["config"]["then"]["method"] == "structured"
    save_checkpoint(tmp_path / "both.pt", pruned)
    back = load_checkpoint(tmp_path / "both.pt")
    x = torch.randn(4, *pruned.input_shape)
    torch.testing.assert_close(back.model.eval()(x), pruned.model.eval()(x))
    assert count_macs(back.model, back.input_shape) == macs["both"]


def test_a_variant_resolves_its_chain_and_reads_finetune_when_a_later_pass_trains():
    from conftest import ROOT

    from cnn_compress.core.config import read_params
    from cnn_compress.variants.resolve import resolve_all

    params = read_params(ROOT / "params.yaml") | {"variants": {
        "deep": {"prune": {"method": "blocks", "ratio": 0.5, "then": {"method": "structured", "ratio": 0.3}}},
        "steps": {"prune": {"method": "blocks", "ratio": 0.5, "then": {"method": "structured", "ratio": 0.3,
                                                                        "schedule": "iterative", "steps": 2,
                                                                        "step_epochs": 1}}}}}
    resolved = resolve_all(params)
    assert {"method": "structured", "ratio": 0.3}.items() <= resolved["deep"]["prune"]["prune"]["then"].items()
    assert "finetune" not in resolved["deep"]["prune"] and "finetune" in resolved["steps"]["prune"]


def test_the_report_names_every_pass_of_a_chained_variant(tmp_path):
    """reports/summary.csv's method column: the whole chain, not only the first pass's method."""
    import json

    from cnn_compress.report.tables import load_rows

    row = {"runtime": "torch", "top1": 90.0, "sparsity": 0.0, "params_nonzero": 10, "macs": 2e6,
           "size_bytes": 4096, "throughput_b8": 100.0}
    (tmp_path / "baseline.json").write_text(json.dumps({"artifacts": {"baseline": row}}))
    for variant, prune in {"deep": {"method": "blocks", "ratio": 0.6},
                           "thin": {"method": "blocks", "ratio": 0.6, "then": {"method": "structured", "ratio": 0.3}}}.items():
        (tmp_path / "v" / variant).mkdir(parents=True)
        (tmp_path / "v" / variant / "benchmark.json").write_text(json.dumps({"variant": variant, "artifacts": {"fp32": row}}))
        (tmp_path / "configs" / variant).mkdir(parents=True)
        (tmp_path / "configs" / variant / "prune.json").write_text(json.dumps({"prune": prune}))
    frame = load_rows(tmp_path / "baseline.json", sorted((tmp_path / "v").iterdir()), tmp_path / "configs")
    assert dict(zip(frame.variant, frame.method, strict=True)) == {
        "(trained)": "", "deep": "blocks", "thin": "blocks+structured 0.3"}
