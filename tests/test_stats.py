"""Params, sparsity and MACs are counted from each artifact itself, the same way for every format."""
import copy

import pytest

from cnn_compress.core.config import parse_section
from cnn_compress.core.errors import CheckpointError
from cnn_compress.data.dataset import calibration_batch
from cnn_compress.export.config import ExportConfig
from cnn_compress.export.exporters import export_all
from cnn_compress.measure.stats import artifact_stats
from cnn_compress.models.checkpoint import save_checkpoint
from cnn_compress.models.zoo import count_macs
from cnn_compress.prune.config import PruneConfig
from cnn_compress.prune.pruning import global_sparsity, prune_model
from cnn_compress.quantize.config import QuantizeConfig
from cnn_compress.quantize.formats import QuantContext, quantize_all


@pytest.fixture(scope="module")
def artifacts(tiny_checkpoint, tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    model = prune_model(copy.deepcopy(tiny_checkpoint.model), PruneConfig(ratio=0.5))
    pruned = tiny_checkpoint.derive(model, "prune", {})
    save_checkpoint(out / "pruned.pt", pruned)
    calib = calibration_batch(tiny_dataset, 4)
    cfg = parse_section(QuantizeConfig, {"formats": ["fp16", "int8_static", "fixed4"]})
    files = {n: e["file"] for n, e in quantize_all(pruned, cfg, QuantContext(calib), out).items()}
    files |= export_all(pruned, calib, out, ExportConfig())
    return pruned, {"pruned": out / "pruned.pt"} | {n: out / f for n, f in files.items()}


def test_every_format_reports_the_sparsity_and_macs_it_holds(artifacts):
    pruned, paths = artifacts
    macs = count_macs(pruned.model, pruned.input_shape)
    stats = {name: artifact_stats(path) for name, path in paths.items()}
    for name, s in stats.items():
        assert s["macs"] == macs, name  # conv and linear MACs: the ONNX graph and the INT8 program agree
        assert s["sparsity"] == pytest.approx(global_sparsity(pruned.model), abs=1.0), name
        assert s["layers"] == stats["pruned"]["layers"], name
    # BatchNorm folds into conv biases in the INT8 program and ONNX, so they count those biases
    assert stats["int8_static"]["params"] > stats["pruned"]["params"]
    assert stats["ort_int8"]["params_nonzero"] < 0.6 * stats["ort_int8"]["params"]


def test_unknown_artifact_kind_is_named(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="cannot count the weights of '.tflite' files"):
        artifact_stats(tmp_path / "model.tflite")


def test_timing_budget_bounds_warm_up_and_runs_of_a_slow_artifact():
    import time

    import torch

    from cnn_compress.measure.benchmark import time_predict

    calls = []

    def slow(x):
        calls.append(1)
        time.sleep(0.03)
        return x

    times = time_predict(slow, torch.zeros(1), warmup=10, repeats=30, max_seconds=0.05)
    assert len(times) == 3 and len(calls) <= 5  # 1-2 warm-up calls, then the minimum of 3 timed runs
    assert all(t >= 25 for t in times)  # milliseconds
    fast = time_predict(lambda x: x, torch.zeros(1), warmup=2, repeats=7, max_seconds=1.0)
    assert len(fast) == 7
