"""Per-layer sensitivity and the allocations built on it: the measurements, the greedy choices,
and both allocations end to end through the real `dvc` (only the new variant runs)."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import copy_project, dvc, set_params, set_variants

from cnn_compress.core.errors import ConfigError
from cnn_compress.prune.config import PruneConfig
from cnn_compress.prune.pruning import layer_sparsity, prune_model
from cnn_compress.quantize.config import FixedConfig
from cnn_compress.sensitivity.allocate import layer_bits, prune_ratios
from cnn_compress.sensitivity.analyze import analyze, l1_zeroed
from cnn_compress.sensitivity.config import SensitivityConfig


def _table(drops: dict[str, tuple[float, float]], params: dict[str, int]) -> dict:
    """A synthetic table: per layer (loss at ratio 0.9, loss at 2 bits), linear in between."""
    return {"baseline_top1": 90.0, "images": 100, "split": "val", "layers": [
        {"layer": n, "params": params[n], "prune": {"0.5": 90 - d[0] / 2, "0.9": 90 - d[0]},
         "bits": {"2": 90 - d[1], "4": 90 - d[1] / 4, "6": 90.0}} for n, d in drops.items()]}


def test_l1_zeroed_removes_the_smallest_magnitudes():
    w = torch.tensor([[0.1, -3.0], [0.5, -0.2]])
    assert torch.equal(l1_zeroed(w, 0.5), torch.tensor([[0.0, -3.0], [0.5, 0.0]]))


def test_prune_allocation_meets_the_target_and_spares_the_sensitive_layer():
    table = _table({"a": (40.0, 1.0), "b": (1.0, 1.0), "c": (4.0, 1.0)}, {"a": 1000, "b": 1000, "c": 2000})
    ratios = prune_ratios(table, 0.6)
    assert sum(ratios[n] * p for n, p in {"a": 1000, "b": 1000, "c": 2000}.items()) == pytest.approx(0.6 * 4000)
    assert ratios["a"] < ratios["c"] <= ratios["b"], ratios
    assert max(ratios.values()) <= 0.9  # never beyond the measured grid
    assert prune_ratios(table, 0.6, ignore=("a",))["a"] == 0.0
    with pytest.raises(ConfigError, match=r"prune.ratio: 0.95 is beyond the sensitivity grid"):
        prune_ratios(table, 0.95)


def test_bit_allocation_keeps_the_sensitive_layer_wide_within_the_budget():
    table = _table({"a": (1.0, 50.0), "b": (1.0, 0.5), "c": (1.0, 1.0)}, {"a": 1000, "b": 1000, "c": 1000})
    bits = layer_bits(table, ["a", "b", "c"], avg_bits=4.0, max_bits=6)
    assert sum(bits.values()) / 3 <= 4.0
    assert bits["a"] == 6 and bits["b"] == 2, bits
    assert layer_bits(table, ["a", "b", "c"], avg_bits=6.0, max_bits=6) == {"a": 6, "b": 6, "c": 6}
    with pytest.raises(ConfigError, match="sensitivity.bits"):
        layer_bits({"layers": []}, ["a"], 3.0, 4)


def test_sensitivity_measures_each_layer_alone(tiny_dataset, tiny_checkpoint):
    cfg = SensitivityConfig(ratios=(0.5, 0.99), bits=(2, 8), split="train", images=60)
    before = {k: v.clone() for k, v in tiny_checkpoint.model.state_dict().items()}
    table = analyze(tiny_checkpoint, tiny_dataset, cfg)
    assert all(torch.equal(before[k], v) for k, v in tiny_checkpoint.model.state_dict().items())  # left as it was
    assert table["images"] == 60 and len(table["layers"]) == len(layer_sparsity(tiny_checkpoint.model))
    first = table["layers"][0]
    assert set(first["prune"]) == {"0.5", "0.99"} and set(first["bits"]) == {"2", "8"}
    base = table["baseline_top1"]
    assert all(abs(row["bits"]["8"] - base) <= 5 for row in table["layers"])  # 8 bits: next to nothing lost
    worst = max(base - row["prune"]["0.99"] for row in table["layers"])
    assert worst > 10  # some layer cannot lose 99% of its weights


def test_layer_ratios_prune_each_layer_to_its_own_ratio(tiny_checkpoint):
    import copy

    model = copy.deepcopy(tiny_checkpoint.model)
    names = [r["layer"] for r in layer_sparsity(model)]
    cfg = PruneConfig(ratio=0.5, layer_ratios={names[0]: 0.25, names[1]: 0.75})
    rows = {r["layer"]: r["sparsity"] for r in layer_sparsity(prune_model(model, cfg))}
    assert rows[names[0]] == pytest.approx(25, abs=1) and rows[names[1]] == pytest.approx(75, abs=1)
    assert rows[names[2]] == 0.0


def test_bad_allocation_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"prune.allocation: .*l1_unstructured"):
        PruneConfig(method="structured", allocation="sensitivity")
    with pytest.raises(ConfigError, match=r"prune.layer_ratios.conv1: must be in \[0, 1\)"):
        PruneConfig(layer_ratios={"conv1": 1.5})
    with pytest.raises(ConfigError, match=r"q.avg_bits: must be in \[2, bits=4\]"):
        FixedConfig(bits=4, allocation="sensitivity", avg_bits=5.0).check("q")
    with pytest.raises(ConfigError, match=r"q.avg_bits: is the budget of allocation: sensitivity"):
        FixedConfig(bits=4, avg_bits=3.0).check("q")
    with pytest.raises(ConfigError, match=r"sensitivity.bits: each width must be in \[2, 8\]"):
        SensitivityConfig(bits=(1,))


@pytest.mark.slow
def test_sensitivity_allocations_run_through_dvc(reproduced, tmp_path):
    """Measuring sensitivity and adding allocated variants runs only them; the allocation is in the
    resolved config, reaches the artifacts, and meets its budget."""
    repo = copy_project(reproduced[0], tmp_path / "repo")
    set_variants(repo, {"main": {}, "sens": {
        "prune": {"allocation": "sensitivity", "ratio": 0.6},
        "quantize": {"formats": {"mixed3": {"type": "fixed", "bits": 6, "scheme": "asymmetric", "allocation": "sensitivity",
                                            "avg_bits": 3.0, "activations": False}}}}})
    bad = dvc("repro", "variants", cwd=repo, check=False)  # the stage is off: nothing to allocate from
    assert bad.returncode != 0 and "needs the sensitivity stage's measurements" in bad.stdout + bad.stderr
    set_params(repo, {"sensitivity": {"ratios": [0.5, 0.9], "bits": [2, 3, 4, 6], "split": "train", "images": 100}})
    out = dvc("repro", "quantize@sens", cwd=repo).stdout
    assert "Running stage 'sensitivity'" in out and "Running stage 'prune@sens'" in out and "Running stage 'train'" not in out
    stale = dvc("status", cwd=repo).stdout  # main's resolved configs did not change: none of its stages is stale
    assert not [line for line in stale.splitlines() if line.startswith(("prune@main", "finetune@main", "quantize@main"))], stale
    cfg = json.loads((repo / "configs/sens/prune.json").read_text())["prune"]
    sparsity = json.loads((repo / "variants/sens/prune.json").read_text())["sparsity"]
    assert sparsity == pytest.approx(60, abs=0.5) and len(set(cfg["layer_ratios"].values())) > 1
    fmt = json.loads((repo / "configs/sens/quantize.json").read_text())["quantize"]["formats"]["mixed3"]
    assert fmt["layer_bits"] and set(fmt["layer_bits"].values()) <= {2, 3, 4, 6}  # measured widths only
    manifest = json.loads((repo / "variants/sens/quantized/manifest.json").read_text())
    assert manifest["mixed3"]["mean_bits"] <= 3.0
    assert (repo / "sensitivity/heatmap.png").stat().st_size > 1000
    metrics = json.loads((repo / "metrics/sensitivity.json").read_text())
    assert metrics["layers"] == len(cfg["layer_ratios"]) and "most_sensitive_bits" in metrics


def test_bit_allocation_is_the_least_loss_within_the_budget():
    """The knapsack answer equals brute force over every width combination (random small tables)."""
    import itertools
    import random

    rng = random.Random(0)
    for _ in range(20):
        names = [f"l{i}" for i in range(4)]
        params = {n: rng.choice([10, 40, 90]) for n in names}
        table = {"baseline_top1": 90.0, "layers": [
            {"layer": n, "params": params[n], "prune": {},  # losses shrink as widths grow (the monotone case)
             "bits": dict(zip(("2", "3", "4", "6"), sorted(90 - rng.random() * 20 for _ in range(4)), strict=True))}
            for n in names]}
        avg = rng.choice([2.5, 3.0, 4.0])
        got = layer_bits(table, names, avg, 6)
        rows = {r["layer"]: r for r in table["layers"]}
        losses = {w: sum(90 - rows[n]["bits"][str(b)] for n, b in zip(names, w, strict=True))
                  for w in itertools.product((2, 3, 4, 6), repeat=4)
                  if sum(b * params[n] for n, b in zip(names, w, strict=True)) <= avg * sum(params.values())}
        assert losses[tuple(got[n] for n in names)] == pytest.approx(min(losses.values()))


def test_allocation_resolution_refuses_what_the_table_did_not_measure():
    from cnn_compress.variants.resolve import resolve_all

    table = _table({"conv1": (1.0, 1.0), "linear": (2.0, 2.0)}, {"conv1": 100, "linear": 50})
    table["config"] = {"scheme": "asymmetric", "granularity": "per_channel", "weight_range": "minmax"}
    fmt = {"type": "fixed", "bits": 6, "allocation": "sensitivity", "avg_bits": 3.0}
    params = {"variants": {"v": {"quantize": {"formats": {"m": fmt}}}}}
    with pytest.raises(ConfigError, match=r"^variants.v.quantize.formats.m: activations: .*set activations: false"):
        resolve_all(params, table)
    params["variants"]["v"]["quantize"]["formats"]["m"] |= {"activations": False, "scheme": "symmetric"}
    with pytest.raises(ConfigError, match=r"scheme: symmetric differs from the sensitivity stage's grid"):
        resolve_all(params, table)
    params["variants"]["v"]["quantize"]["formats"]["m"]["scheme"] = "asymmetric"
    resolved = resolve_all(params | {"prune": {"allocation": "sensitivity", "ratio": 0.0}}, table)["v"]
    assert resolved["quantize"]["quantize"]["formats"]["m"]["layer_bits"].keys() == {"conv1", "linear"}
    assert resolved["prune"]["prune"]["allocation"] == "uniform"  # a 0% point has nothing to spread
