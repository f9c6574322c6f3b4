"""The deploy study's review protocol (issue 31): choices on `select`, accuracies on `report`; an
equal-budget dense reference; the benchmark_app cross-check; static-shape OpenVINO runners; one
burst timing for every study. Fast: made-up cells and configs, tiny real artifacts."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from cnn_compress.core.config import to_dict
from cnn_compress.data.config import DataConfig
from cnn_compress.data.dataset import prepare
from cnn_compress.models.checkpoint import save_checkpoint
from cnn_compress.prune.config import PruneConfig
from cnn_compress.studies import common
from cnn_compress.studies.deploy_cpu import (
    Cell,
    DeployConfig,
    add_comparisons,
    build_frame,
    protocol,
    score_cells,
    targets,
)
from cnn_compress.studies.deploy_cpu.report import finding
from cnn_compress.train.config import FinetuneConfig

CFG = DeployConfig(threads=(1,), batch_sizes=(1, 8), peak=False)
# variant/artifact -> (top-1 on select, top-1 on report, ms at batch 1, ms at batch 8, KiB)
MADE_UP = {"dense/finetuned": (90.0, 90.0, 10.0, 40.0, 400), "dense/ort_int8": (89.8, 89.9, 6.0, 20.0, 100),
           "dense/openvino_int8": (89.9, 89.7, 5.0, 18.0, 110),
           "fast/openvino_int8": (89.5, 85.0, 2.0, 8.0, 30),  # within 1 point on select, not on report
           "faster/openvino_int8": (87.0, 89.9, 1.0, 4.0, 20),  # 3 points down on select, fine on report
           "small/ort_int8": (89.2, 89.0, 4.0, 15.0, 10)}


def made_up(accuracies: dict[str, tuple[float, float]] | None = None) -> dict:
    """The targets chosen from made-up cells (``accuracies``: key -> (select, report) overrides)."""
    cells, times = [], {}
    for key, (sel, rep, b1, b8, kib) in MADE_UP.items():
        sel, rep = (accuracies or {}).get(key, (sel, rep))
        variant, name = key.split("/")
        stats = {"top1": rep, "top1_select": sel, "sparsity": 0.0, "macs": 1e6, "size_bytes": kib * 1024,
                 "size_compressed_bytes": kib * 1024}
        cells.append(Cell(variant, name, Path(f"{key}.xml"), False, stats, "OpenVINO", "INT8"))
        times[key] = {1: [b1] * 5, 8: [b8] * 5}
    frame = build_frame(cells, {1: times}, {}, CFG, {})
    ref = add_comparisons(frame, CFG)
    return targets(frame, CFG, ref) | {"frame": frame}


def test_choices_read_select_never_report():
    base = made_up()
    assert base["fastest"] == "fast/openvino_int8"  # `faster` is 3 points down on select: not eligible
    assert base["smallest"] == "small/ort_int8"
    assert base["fastest_drop_select"] == 0.5 and base["fastest_drop"] == 5.0  # reported: outside the budget
    choices = ("eligible", "fastest", "smallest", "best_throughput", "fastest_overall")
    # every report accuracy changed (the dense reference's too): not one choice moves
    flipped = {k: (v[0], 100.0 - v[1]) for k, v in MADE_UP.items()}
    after = made_up(flipped)
    assert {k: after[k] for k in choices} == {k: base[k] for k in choices}
    assert after["fastest_drop"] != base["fastest_drop"]  # the reported figures did change
    # the same change on select does move the choice: the test above could fail
    moved = made_up({"faster/openvino_int8": (89.9, 87.0)})
    assert moved["fastest"] == "faster/openvino_int8"


def test_score_cells_report_labels_cannot_move_select(tiny_checkpoint, tmp_path):
    """Real artifact, real split: flipping every report label changes top1 but not top1_select."""
    ds = prepare(DataConfig(max_per_class=30, select_fraction=0.5), tmp_path / "data")
    save_checkpoint(tmp_path / "m.pt", tiny_checkpoint)

    def scored(data):
        cells = [Cell("dense", "finetuned", tmp_path / "m.pt", False, {"top1": -1.0})]
        splits = score_cells(cells, data, 1)
        return splits, cells[0].stats

    splits, before = scored(ds)
    assert (splits.choose, splits.report, splits.separate) == ("select", "report", True)
    assert splits.n_choose + splits.n_report == len(ds.splits["test"])
    assert "made on `select`" in splits.sentence()
    labels = ds.labels.clone()
    idx = ds.splits["report"]
    labels[idx] = (labels[idx] + 1) % ds.num_classes
    _, after = scored(dataclasses.replace(ds, labels=labels))
    assert after["top1_select"] == before["top1_select"]
    assert after["top1"] != before["top1"]


def test_no_selection_split_warns(tiny_dataset):
    cells = [Cell("dense", "finetuned", Path("x.pt"), False, {"top1": 80.0})]
    splits = score_cells(cells, tiny_dataset, 1)  # no evaluation: the benchmark's test accuracy serves both
    assert (splits.choose, splits.report, splits.separate) == ("test", "test", False)
    assert cells[0].stats["top1_select"] == 80.0
    assert "Warning: choices and reported accuracies read the same split" in splits.sentence()


def budget(epochs: int, train_images: int = 50_000, prune: PruneConfig | None = None, **ft) -> protocol.Budget:
    cfg = FinetuneConfig(epochs=epochs, steps_per_epoch=100, **ft)
    return protocol.training_budget(cfg, prune or PruneConfig(ratio=0.0), train_images, {"epochs": epochs, "lr": cfg.lr})


def test_under_trained_reference_is_said():
    budgets = {"dense": budget(0), "d60s30kd30": budget(30, lr=0.02), "d60s30kd": budget(15, lr=0.02)}
    lines = protocol.budget_check(budgets, "dense")
    assert lines == ["reference under-trained: dense 0 epochs (0 steps) against 30 epochs (3,000 steps) for "
                     "d60s30kd30, 15 epochs (1,500 steps) for d60s30kd"]
    text = finding({"eligible": 0, "fastest_overall": "a/b", "fastest_overall_x_vs_ov_int8": 2.0,
                    "fastest_overall_drop": 0.5}, {"dense_top1": 90.0}, lines)
    assert text.startswith("**Reference under-trained: dense 0 epochs")


def test_equal_budget_reference_passes_and_recipe_differences_show():
    assert protocol.budget_check({"dense": budget(30, lr=0.02), "v": budget(30, lr=0.02)}, "dense") == []
    lines = protocol.budget_check({"dense": budget(30), "v": budget(30, lr=0.02)}, "dense")
    assert lines == ["reference fine-tuned differently from v: lr 0.01 against 0.02"]
    # iterative pruning trains between its steps: those epochs count
    iterative = PruneConfig(ratio=0.5, schedule="iterative", steps=3, step_epochs=2)
    assert budget(30, prune=iterative).epochs == 36
    assert protocol.budget_check({"dense": budget(30), "it": budget(30, prune=iterative)}, "dense")[0].startswith(
        "reference under-trained: dense 30 epochs (3,000 steps) against 36 epochs (3,600 steps)")
    # steps_per_epoch 0: the whole training split, in batches
    assert protocol.training_budget(FinetuneConfig(epochs=2, batch_size=64), PruneConfig(), 1000).steps == 2 * 16


def test_budgets_read_from_resolved_configs(tmp_path):
    """configs/<v>/{finetune,prune}.json as the variants stage writes them; by_ratio without a record."""
    rows = ({"upto": 0.0, "epochs": 0, "lr": 0.01}, {"upto": 0.7, "epochs": 4, "lr": 0.02})
    for v, ratio in (("dense", 0.0), ("s50", 0.5)):
        (tmp_path / "configs" / v).mkdir(parents=True)
        ft = to_dict(FinetuneConfig(steps_per_epoch=100)) | {"by_ratio": list(rows)}
        (tmp_path / "configs" / v / "finetune.json").write_text(json.dumps({"finetune": ft}))
        (tmp_path / "configs" / v / "prune.json").write_text(json.dumps({"prune": to_dict(PruneConfig(ratio=ratio))}))
    budgets = protocol.read_budgets(["dense", "s50"], 50_000, tmp_path)
    assert (budgets["dense"].epochs, budgets["s50"].epochs, budgets["s50"].steps) == (0, 4, 400)
    assert protocol.budget_check(budgets, "dense")[0].startswith("reference under-trained: dense 0 epochs")


def test_cross_check_agreement_and_rows():
    assert protocol.agreement(100.0, 90.0) == (11.1, True)
    assert protocol.agreement(100.0, 80.0) == (25.0, False)
    assert protocol.verdict(*protocol.agreement(80.0, 100.0)) == "disagree: -20.0%"
    timings = {1: {"dense/openvino_int8": {1: [2.0, 2.0, 2.0], 8: [8.0, 8.0, 8.0]}}}

    def measure(path, batch, threads, seconds):
        return {"ms_median": 2.1, "ips": 600.0} if batch == 1 else {"ms_median": 8.0, "ips": 1000.0}

    def loop(path, batch, threads, seconds):  # the harness's method now: as fast as in the rounds
        return 2.0 if batch == 1 else 8.0

    cell = {"dense anchor": (Path("d.xml"), "dense/openvino_int8")}
    rows = protocol.cross_check(cell, timings, (1, 8), 1, measure, loop)
    assert [(r["metric"], r["harness"], r["benchmark_app"], r["verdict"], r["loop_now"], r["cause"]) for r in rows] == [
        ("ms", 2.0, 2.1, "agree", 2.0, ""), ("img/s", 1000.0, 1000.0, "agree", 1000.0, "")]

    def slow(path, batch, threads, seconds):
        return {"ms_median": 3.0, "ips": 1.0}

    row = protocol.cross_check(cell, timings, (1, 8), 1, slow, loop)[0]
    assert row["verdict"] == "disagree: -33.3%" and row["cause"].startswith("method: a loop around benchmark_app disagrees")

    def slower_now(path, batch, threads, seconds):  # the machine slowed down after the rounds
        return 2.9

    row = protocol.cross_check(cell, timings, (1,), 1, slow, slower_now)[0]
    assert row["verdict"] == "disagree: -33.3%" and row["loop_now"] == 2.9
    assert row["cause"] == "moment: a loop around benchmark_app agrees with it (-3.3%); the rounds were -31.0% off it"

    def broken(path, batch, threads, seconds):
        raise RuntimeError("benchmark_app failed")

    row = protocol.cross_check(cell, timings, (1,), 1, broken, loop)[0]
    assert not row["agree"] and row["verdict"].startswith("failed")


def test_the_cross_check_loop_times_a_real_ir(tmp_path):
    pytest.importorskip("openvino")
    from cnn_compress.runtimes import ov_runtime

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    ov_runtime.save(ov_runtime.convert(model, torch.randn(1, 3, 8, 8)), tmp_path / "m.xml")
    one, many = protocol.loop_ms(tmp_path / "m.xml", 1, 1, 0.05), protocol.loop_ms(tmp_path / "m.xml", 64, 1, 0.05)
    assert 0 < one < many  # static per batch size, as the harness compiles it: 64 images take longer than 1


def test_cross_check_picks_anchor_and_winner():
    irs = {"dense/openvino_int8", "s50/openvino_int8", "s50/openvino_fp32"}
    assert protocol.cross_check_keys(irs, "dense", "s50/openvino_fp32") == {
        "dense anchor": "dense/openvino_int8", "winner": "s50/openvino_fp32"}
    other = protocol.cross_check_keys(irs, "dense", "s50/ort_int8")  # not an IR: its variant's INT8 IR
    assert list(other.values()) == ["dense/openvino_int8", "s50/openvino_int8"] and "no IR" in list(other)[1]
    assert protocol.cross_check_keys(irs, "dense", "dense/openvino_int8") == {"dense anchor": "dense/openvino_int8"}
    assert protocol.cross_check_keys(irs, "dense", "u50/ort_int8") == {"dense anchor": "dense/openvino_int8"}
    assert protocol.cross_check_keys(irs, "dense", None) == {"dense anchor": "dense/openvino_int8"}
    # the winner is the anchor: the fastest at any accuracy is still checked, as itself or its variant's IR
    assert protocol.cross_check_keys(irs, "dense", "dense/openvino_int8", "s50/openvino_fp32") == {
        "dense anchor": "dense/openvino_int8", "fastest at any accuracy": "s50/openvino_fp32"}
    both = protocol.cross_check_keys(irs, "dense", "dense/ort_int8", "s50/ort_int8")
    assert list(both.values()) == ["dense/openvino_int8", "s50/openvino_int8"] and "no IR" in list(both)[1]
    assert len(protocol.cross_check_keys(irs, "dense", "s50/openvino_fp32", "s50/openvino_fp32")) == 2


def test_every_study_times_with_the_burst(monkeypatch, tiny_checkpoint, tiny_dataset, tmp_path):
    from cnn_compress.measure import benchmark

    seen = []
    real = benchmark.time_interleaved
    monkeypatch.setattr(benchmark, "time_interleaved", lambda *a: seen.append(a[3]) or real(*a))
    save_checkpoint(tmp_path / "m.pt", tiny_checkpoint)
    out = common.time_together({"m": tmp_path / "m.pt"}, tiny_dataset, 1, 3, 0.05)
    assert seen == [common.BURST_MS] and DeployConfig().burst_ms == common.BURST_MS > 0
    assert out["m"]["ms"] > 0


def test_openvino_runner_is_static_per_batch_size(tmp_path):
    pytest.importorskip("openvino")
    from cnn_compress.runtimes import ov_runtime
    from cnn_compress.runtimes.runners import load_runner

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    ov_runtime.save(ov_runtime.convert(model, torch.randn(1, 3, 8, 8)), tmp_path / "m.xml")
    runner = load_runner(tmp_path / "m.xml")
    assert isinstance(runner.predict, ov_runtime.StaticShapes)
    x = torch.randn(3, 3, 8, 8)
    assert torch.allclose(runner.predict(x[:1]), model(x[:1]), atol=1e-4)
    assert torch.allclose(runner.predict(x), model(x), atol=1e-4)
    shapes = {s[0] for s in runner.predict.requests}
    assert shapes == {1, 3}  # one static compilation per batch size met
