"""Params, sparsity and MACs are counted from each artifact itself, the same way for every format."""
import copy
import time

import pytest
import torch

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


def test_median_interval_is_the_binomial_order_statistics():
    from cnn_compress.measure.benchmark import median_ci95

    assert median_ci95([float(v) for v in range(1, 31)]) == (10.0, 21.0)  # the published ranks for n = 30
    assert median_ci95([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few runs: the whole range
    # a fast machine's burst: 5,000 calls (in floats, comb(n, k) / 2**n overflowed past ~1,030); the
    # normal approximation puts the ranks at n/2 -+ 0.98 sqrt(n) = 2,431 and 2,569 (0-based: 2,430, 2,569)
    assert median_ci95([float(v) for v in range(5000)]) == (2430.0, 2569.0)


def _sleeping_runners(calls: list, delays: dict[str, float]) -> dict:
    """Timed runners that log their name to ``calls`` and sleep ``delays[name]`` seconds per call."""
    from cnn_compress.measure.benchmark import Timed

    def runner(name, delay):
        def predict(x):
            calls.append(name)
            time.sleep(delay)
            return x
        return predict

    return {name: Timed(runner(name, delay)) for name, delay in delays.items()}


def test_interleaved_timing_rotates_the_order_and_bounds_slow_runners():
    from cnn_compress.measure.benchmark import time_interleaved
    from cnn_compress.measure.config import BenchmarkConfig

    calls = []
    timed = _sleeping_runners(calls, {"a": 0.0, "b": 0.02})
    time_interleaved(timed, {1: torch.zeros(1)}, BenchmarkConfig(batch_sizes=(1,), warmup=1, repeats=8, max_seconds=0.05))
    assert len(timed["a"].times[1]) == 8  # every round
    assert len(timed["b"].times[1]) == 3  # 20 ms calls: over its 50 ms budget after 3, the minimum kept
    rounds = calls[2:]  # after one warm-up call each
    assert rounds[:4] == ["a", "b", "b", "a"]  # the order rotates every round


def test_burst_turns_warm_the_runner_and_time_calls_back_to_back():
    """burst_ms: each turn is one untimed call, then timed calls until the burst is spent."""
    from cnn_compress.measure.benchmark import time_interleaved
    from cnn_compress.measure.config import BenchmarkConfig

    calls = []
    timed = _sleeping_runners(calls, {"fast": 0.001, "slow": 0.03})
    time_interleaved(timed, {1: torch.zeros(1)}, BenchmarkConfig(batch_sizes=(1,), warmup=1, repeats=3, max_seconds=10),
                     burst_ms=10.0)
    fast, slow = timed["fast"].times[1], timed["slow"].times[1]
    assert len(slow) == 3 and min(slow) >= 30.0  # a call longer than the burst: one timed call a turn
    assert 3 * 5 <= len(fast) <= 3 * 11  # about 10 ms of 1 ms calls per turn
    assert calls.count("slow") == 1 + 3 * 2  # warm-up, then an untimed and a timed call each turn
    assert calls.count("fast") == 1 + 3 + len(fast)
    turns = [name for i, name in enumerate(calls[2:]) if i == 0 or calls[2:][i - 1] != name]
    # rounds fast|slow, slow|fast, fast|slow: round-robin, rotating (a name's turns across a round merge)
    assert turns == ["fast", "slow", "fast", "slow"]


def test_benchmark_times_a_control_twice(tiny_checkpoint, tiny_dataset, tmp_path):
    from cnn_compress.measure.benchmark import run_benchmark
    from cnn_compress.measure.config import BenchmarkConfig
    from cnn_compress.models.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "a.pt", tiny_checkpoint)
    cfg = BenchmarkConfig(batch_sizes=(1, 4), warmup=1, repeats=5, max_seconds=0.5, compile=())
    result = run_benchmark([("a", tmp_path / "a.pt", "model")], tiny_dataset, cfg)
    control = result["control"]
    assert control["artifact"] == "a" and set(control) == {"artifact", "b1", "b4"}
    assert isinstance(control["b1"]["agree_within_5pct"], bool) and control["b1"]["ratio"] > 0
    row = result["artifacts"]["a"]
    lo, hi = row["latency_ms_b1_ci95"]
    assert lo <= row["latency_ms_b1_median"] <= hi and row["timed_runs_b1"] == 5
    assert "a#control" not in result["artifacts"]
