"""The studies' published-claim checks on made-up tables: each holds on a table shaped like the
published one and fails on a table where only its claim is broken (pure pandas, no pipeline)."""
from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pandas as pd
import pytest

from cnn_compress.studies import checks as C
from cnn_compress.studies.approx_compression_resnet18_mobilenetv2 import shape_checks as approx_checks
from cnn_compress.studies.mixed_precision_pruning_resnet18_imagenet import shape_checks as mixed_checks
from cnn_compress.studies.pruning_fixed_point_resnet20 import METHODS
from cnn_compress.studies.pruning_fixed_point_resnet20 import shape_checks as fixed_checks
from cnn_compress.studies.pruning_quantization_resnet18_vgg16 import PruneQuantConfig
from cnn_compress.studies.pruning_quantization_resnet18_vgg16 import shape_checks as pq_checks
from cnn_compress.studies.structured_pruning_ptq_resnet18.tables import AMP, COMBINED, PTQ, SWEEP
from cnn_compress.studies.structured_pruning_ptq_resnet18.tables import shape_checks as structured_checks


# --- study 000: the ratio sweep (fine-tuned FP32 per ratio, the 50% model's dynamic INT8) ---
def approx_table() -> pd.DataFrame:
    rows = [(0, "finetuned", 74.5, 42.73, 40.0, 2.40), (30, "finetuned", 82.5, 42.73, 30.0, 2.38),
            (50, "finetuned", 81.6, 42.73, 22.0, 2.44), (70, "finetuned", 83.0, 42.73, 14.0, 2.41),
            (50, "int8_dynamic", 81.6, 42.72, 22.0, 2.60)]
    return pd.DataFrame(rows, columns=["prune_ratio_pct", "artifact", "top1", "size_MB", "ccz_MB", "ms"])


def approx_set(frame: pd.DataFrame, pct: int, artifact: str, **values: float) -> None:
    for col, v in values.items():
        frame.loc[(frame.prune_ratio_pct == pct) & (frame.artifact == artifact), col] = v


APPROX_BREAKS = {
    "pruning_raises_accuracy": lambda f: approx_set(f, 50, "finetuned", top1=75.4),  # +0.9: within the 1-point noise
    "every_ratio_above_baseline": lambda f: approx_set(f, 30, "finetuned", top1=70.0),
    "best_at_70pct": lambda f: approx_set(f, 70, "finetuned", top1=80.0),
    "dynamic_int8_keeps_accuracy": lambda f: approx_set(f, 50, "int8_dynamic", top1=79.0),
    "dynamic_int8_slower": lambda f: approx_set(f, 50, "int8_dynamic", ms=2.30),
    "latency_flat_across_ratios": lambda f: approx_set(f, 70, "finetuned", ms=3.0),
}


# --- study 001: the sweep, the unpruned formats, pruning x formats, AMP ---
def structured_frames() -> dict[str, pd.DataFrame]:
    acc, ms = "test_acc_pct ours", "inference_ms_per_image ours"
    sweep = pd.DataFrame([(0, 92.0, 91.9), (50, 10.0, 86.0), (60, 10.0, 89.1), (70, 10.0, 83.0), (90, 10.0, 61.6)],
                         columns=["prune_pct", "acc_before_ft_pct ours", "acc_after_ft_pct ours"])
    ptq = pd.DataFrame([("FP32", 92.0, 0.61), ("FP16", 92.0, 0.25), ("INT8", 92.1, 0.20)], columns=["format", acc, ms])
    comb = pd.DataFrame([(p, f, a, m) for p, accs in ((50, (86.0, 86.0, 85.84)), (60, (89.0, 89.0, 89.03)),
                                                     (70, (82.0, 82.0, 82.05)))
                         for f, a, m in zip(("FP32", "FP16", "INT8"), accs, (1.8, 0.17, 0.12), strict=True)],
                        columns=["prune_pct", "format", acc, ms])
    amp = pd.DataFrame([("AMP", 91.95, 1.08), ("FP32", 92.02, 1.0)], columns=["training_precision", acc, "speed_vs_fp32"])
    return {SWEEP: sweep, PTQ: ptq, COMBINED: comb, AMP: amp}


def cell(frame: pd.DataFrame, where: dict[str, object], col: str, value: float) -> None:
    mask = pd.Series(True, index=frame.index)
    for k, v in where.items():
        mask &= frame[k] == v
    assert mask.sum() == 1
    frame.loc[mask, col] = value


BEFORE, AFTER = "acc_before_ft_pct ours", "acc_after_ft_pct ours"
ACC, MS = "test_acc_pct ours", "inference_ms_per_image ours"
STRUCTURED_BREAKS = {
    "before_ft_near_chance_from_45pct": lambda f: cell(f[SWEEP], {"prune_pct": 50}, BEFORE, 40.0),
    "ft_recovers_at_every_ratio": lambda f: cell(f[SWEEP], {"prune_pct": 70}, BEFORE, 85.0),
    "after_ft_lowest_at_highest_ratio": lambda f: cell(f[SWEEP], {"prune_pct": 90}, AFTER, 85.0),
    "sixty_pct_best_from_50pct": lambda f: cell(f[SWEEP], {"prune_pct": 70}, AFTER, 90.0),
    "int8_within_1_point_of_fp32": lambda f: cell(f[COMBINED], {"prune_pct": 70, "format": "INT8"}, ACC, 80.0),
    "int8_faster_than_fp32": lambda f: cell(f[PTQ], {"format": "INT8"}, MS, 0.70),
    "sixty_int8_most_accurate_int8": lambda f: cell(f[COMBINED], {"prune_pct": 50, "format": "INT8"}, ACC, 89.5),
    "sixty_int8_drop_within_2_99_points": lambda f: cell(f[COMBINED], {"prune_pct": 60, "format": "INT8"}, ACC, 88.9),
    "sixty_int8_faster_than_unpruned_fp32": lambda f: cell(f[COMBINED], {"prune_pct": 60, "format": "INT8"}, MS, 0.7),
    "fp16_within_0_1_point_of_fp32": lambda f: cell(f[PTQ], {"format": "FP16"}, ACC, 91.5),
    "fp16_faster_than_fp32": lambda f: cell(f[PTQ], {"format": "FP16"}, MS, 0.70),
    "amp_within_0_5_point_of_fp32": lambda f: cell(f[AMP], {"training_precision": "AMP"}, ACC, 91.0),
    "amp_training_faster_than_fp32": lambda f: cell(f[AMP], {"training_precision": "AMP"}, "speed_vs_fp32", 0.9),
}
TRT = SimpleNamespace(runtime="tensorrt")


# --- study 002: pruning x format grid (eager) ---
def pq_grid(table: str) -> pd.DataFrame:
    if table == "resnet18_summary":
        rows = {("none", "FP32"): (92.49, 44.81, 11.1, 83.3), ("none", "dynamic INT8"): (92.54, 44.79, 11.1, 85.1),
                ("none", "static INT8"): (91.80, 11.31, 11.1, 31.6), ("none", "QAT INT8"): (94.72, 11.31, 11.1, 34.75),
                ("structured", "FP32"): (84.42, 10.88, 2.7, 21.2), ("structured", "dynamic INT8"): (84.4, 10.8, 2.7, 21.5),
                ("structured", "static INT8"): (84.0, 2.8, 2.7, 14.0), ("structured", "QAT INT8"): (87.26, 2.79, 2.7, 13.56)}
    else:
        rows = {("none", "FP32"): (90.73, 537.31, 134.3, 355.76), ("none", "dynamic INT8"): (11.09, 71.81, 14.7, 362.9),
                ("none", "static INT8"): (90.90, 134.57, 134.3, 239.73), ("none", "QAT INT8"): (90.8, 134.57, 134.3, 240.0),
                ("structured", "FP32"): (92.0, 63.08, 16.5, 239.0), ("structured", "dynamic INT8"): (91.98, 36.55, 7.24, 239.0),
                ("structured", "static INT8"): (90.5, 16.0, 16.5, 120.0), ("structured", "QAT INT8"): (90.6, 16.0, 16.5, 120.0)}
    return pd.DataFrame([{"pruning": p, "format": f, "runtime": "eager", "top1": a, "size_MB": s, "params_M": n, "ms": m}
                         for (p, f), (a, s, n, m) in rows.items()])


def grid_set(col: str, pruning: str, fmt: str, value: float) -> Callable[[pd.DataFrame], None]:
    return lambda g: cell(g, {"pruning": pruning, "format": fmt}, col, value)


PQ_COMMON = {
    "static_int8_about_4x_smaller": lambda t: grid_set("size_MB", "none", "static INT8", 0.5 * pq_base(t).size_MB),
    "static_int8_faster_than_fp32": lambda t: grid_set("ms", "none", "static INT8", 1.1 * pq_base(t).ms),
    "static_int8_keeps_accuracy": lambda t: grid_set("top1", "none", "static INT8", pq_base(t).top1 - 1.5),
}
PQ_BREAKS = {
    "resnet18_summary": {
        "dynamic_int8_keeps_accuracy": grid_set("top1", "none", "dynamic INT8", 90.0),
        "dynamic_int8_latency_barely_changes": grid_set("ms", "none", "dynamic INT8", 100.0),
        "qat_above_baseline": grid_set("top1", "none", "QAT INT8", 93.2),  # +0.71: not a rise
        "structured_costs_accuracy": grid_set("top1", "structured", "FP32", 93.0),
        "structured_faster_than_fp32": grid_set("ms", "structured", "FP32", 90.0),
        "pruned_qat_smallest": grid_set("size_MB", "structured", "QAT INT8", 11.0),
        "pruned_qat_fastest": grid_set("ms", "structured", "QAT INT8", 25.0),
    },
    "vgg16bn_summary": {
        "dynamic_int8_collapses": grid_set("top1", "none", "dynamic INT8", 90.0),
        "pruning_raises_accuracy": grid_set("top1", "structured", "FP32", 91.5),  # +0.77: not a rise
        "pruned_dynamic_int8_smaller_than_pruned": grid_set("size_MB", "structured", "dynamic INT8", 70.0),
        "pruned_dynamic_int8_keeps_accuracy": grid_set("top1", "structured", "dynamic INT8", 80.0),
    },
}


def pq_base(table: str) -> pd.Series:
    g = pq_grid(table)
    return g[(g.pruning == "none") & (g.format == "FP32")].iloc[0]


# --- study 003: one CPU row per published table ---
def mixed_rows() -> pd.DataFrame:
    return pd.DataFrame([("fp32_baseline", 89.0, 46.83, 14.36), ("int8_pruned", 76.45, 11.83, 782.0),
                         ("fp16_pruned", 81.98, 23.43, 16.55), ("mixed_precision_pruned", 79.23, 14.29, 80.82),
                         ("pruned_only_fp32", 89.54, 44.96, 12.11)],
                        columns=["table", "top5_acc_pct", "model_size_MB", "inference_time_ms"])


def row_set(table: str, col: str, value: float) -> Callable[[pd.DataFrame], None]:
    return lambda f: cell(f, {"table": table}, col, value)


MIXED_BREAKS = {
    "int8_about_4x_smaller": row_set("int8_pruned", "model_size_MB", 20.0),
    "quantize_then_prune_costs_accuracy": row_set("int8_pruned", "top5_acc_pct", 90.0),
    "int8_pruned_slower_on_cpu": row_set("int8_pruned", "inference_time_ms", 10.0),
    "fp16_pruned_costs_accuracy": row_set("fp16_pruned", "top5_acc_pct", 89.5),
    "fp16_pruned_slower_on_cpu": row_set("fp16_pruned", "inference_time_ms", 12.0),
    "fp32_classifier_recovers_part_of_int8_loss": row_set("mixed_precision_pruned", "top5_acc_pct", 75.0),
    "mixed_faster_than_int8_on_cpu": row_set("mixed_precision_pruned", "inference_time_ms", 800.0),
    "pruning_alone_keeps_accuracy": row_set("pruned_only_fp32", "top5_acc_pct", 86.0),
    "pruning_alone_faster_on_cpu": row_set("pruned_only_fp32", "inference_time_ms", 15.0),
    "quantized_pruned_cost_7_to_13_points": row_set("fp16_pruned", "top5_acc_pct", 84.0),
}


# --- study 004: the four published tables (percent) ---
FIXED_BASE = 91.51


def fixed_tables() -> dict[str, pd.DataFrame]:
    prune = pd.DataFrame([("Floating-point baseline", "dense", 91.51), (METHODS[0], "oneshot", 87.94),
                          (METHODS[1], "iterative", 87.69), (METHODS[2], "global", 88.41)],
                         columns=["method", "variant", "acc ours"])
    quant = pd.DataFrame([(6, 91.44, 91.34), (5, 91.13, 90.71), (4, 89.73, 85.32), (3, 76.60, 71.51), (2, 8.99, 10.0)],
                         columns=["nbits", "asym ours", "sym ours"])
    ft = pd.DataFrame([(5, 91.56), (4, 91.40), (3, 90.58), (2, 85.97)], columns=["nbits", "asym ft ours"])
    comb = pd.DataFrame([(5, 87.78, 90.32), (4, 86.03, 89.94), (3, 71.86, 87.15), (2, 10.0, 33.48)],
                        columns=["nbits", "before ft ours", "after ft ours"])
    return {"pruning_finetune": prune, "quant_no_finetune": quant, "asym_quant_finetune": ft,
            "pruned_then_quantized": comb}


def fixed_set(table: str, key: dict[str, object], col: str, value: float) -> Callable[[dict[str, pd.DataFrame]], None]:
    return lambda t: cell(t[table], key, col, value)


FIXED_BREAKS = {
    "global_iterative_pruning_best": fixed_set("pruning_finetune", {"variant": "global"}, "acc ours", 87.0),
    "five_six_bits_within_0_8_points": fixed_set("quant_no_finetune", {"nbits": 5}, "sym ours", 90.5),
    "asym_above_sym_at_4_and_3_bits": fixed_set("quant_no_finetune", {"nbits": 3}, "sym ours", 77.0),
    "collapse_at_2_bits_without_ft": fixed_set("quant_no_finetune", {"nbits": 2}, "asym ours", 40.0),
    "ft_recovers_at_every_width": fixed_set("asym_quant_finetune", {"nbits": 4}, "asym ft ours", 89.0),
    "ft_3_to_5_bits_within_1_point": fixed_set("asym_quant_finetune", {"nbits": 3}, "asym ft ours", 90.0),
    "ft_lifts_2_bits_by_30_points": fixed_set("asym_quant_finetune", {"nbits": 2}, "asym ft ours", 30.0),
    "combined_ft_recovers": fixed_set("pruned_then_quantized", {"nbits": 3}, "after ft ours", 70.0),
    "combined_2_bits_collapse": fixed_set("pruned_then_quantized", {"nbits": 2}, "after ft ours", 80.0),
    "combined_4_bits_above_pruned_fp": fixed_set("pruned_then_quantized", {"nbits": 4}, "after ft ours", 89.0),
}


# --- every study: (name, the good input, run the checks on an input, the breaks) ---
def _pq(table: str) -> tuple[Callable[[], object], Callable[[object], list[C.Check]], dict[str, Callable]]:
    cfg = PruneQuantConfig(table=table)
    breaks = {k: make(table) for k, make in PQ_COMMON.items()} | PQ_BREAKS[table]
    return (lambda: pq_grid(table)), (lambda g: pq_checks(g, cfg)), breaks


STUDIES = {
    "000": (approx_table, lambda s: approx_checks(s, "resnet18_c10"), APPROX_BREAKS),
    "001": (structured_frames, lambda f: structured_checks(f, TRT), STRUCTURED_BREAKS),
    "002_resnet18": _pq("resnet18_summary"),
    "002_vgg16bn": _pq("vgg16bn_summary"),
    "003": (mixed_rows, mixed_checks, MIXED_BREAKS),
    "004": (fixed_tables, lambda t: fixed_checks(t, FIXED_BASE, "global"), FIXED_BREAKS),
}
CASES = [(study, key) for study, (_, _, breaks) in STUDIES.items() for key in breaks]


def published_results(checks: list[C.Check]) -> dict[str, bool | None]:
    return {c.key: c.result for c in checks if c.kind == "published"}


@pytest.mark.parametrize("study", list(STUDIES))
def test_every_published_check_holds_on_a_table_shaped_like_the_published_one(study):
    make, run, breaks = STUDIES[study]
    results = published_results(run(make()))
    tested = {k for k, v in results.items() if v is not None}
    assert tested == set(breaks)  # every testable published check has a table on which it fails (below)
    assert all(results[k] for k in tested), {k: v for k, v in results.items() if v is False}
    assert len({c.key for c in run(make())}) == len(run(make()))  # keys are unique


@pytest.mark.parametrize(("study", "key"), CASES)
def test_each_published_check_fails_on_a_table_that_breaks_its_claim(study, key):
    make, run, breaks = STUDIES[study]
    table = make()
    breaks[key](table)
    results = published_results(run(table))
    assert results[key] is False


def test_a_finding_counts_only_testable_published_claims():
    checks = [C.claim("a_holds", "x", True), C.claim("b_fails", "y", False),
              C.sanity("size_same", "z", True, "dense storage"), C.own("ours_fast", "w", False),
              C.untestable("gpu", "v", "CPU only")]
    assert C.count_line(checks) == "1 of 2 published claims hold; contradicted: b fails"
    assert C.count_line(checks[:1]) == "1 of 1 published claims hold"
    metrics = C.as_metrics(checks)
    assert metrics["published_claims_hold"] == 1 and metrics["published_claims_tested"] == 2
    assert "gpu" not in metrics and metrics["size_same"] is True and metrics["ours_fast"] is False
    text = "\n".join(C.section(checks, "some-study"))
    counted, apart = text.split("### Not counted")
    assert "- a holds: **yes** - x" in counted and "- b fails: **no** - y" in counted
    assert "size same" not in counted and "ours fast" not in counted and "gpu" not in counted
    assert "- size same (sanity): **yes** - z. dense storage" in apart
    assert "- gpu (published): **untestable** - v. CPU only" in apart and "- ours fast (ours): **no** - w" in apart


def test_checks_true_by_construction_are_not_counted():
    """000's dense file size, 001's f32-computed FP16 IR and 003's pruned file size are sanity checks."""
    assert {c.key: c.kind for c in approx_checks(approx_table(), "resnet18_c10")}[
        "size_unchanged_by_unstructured_pruning"] == "sanity"
    kinds = {c.key: c.kind for c in structured_checks(structured_frames(), SimpleNamespace(runtime="openvino"))}
    assert kinds["fp16_within_0_1_point_of_fp32"] == "sanity"
    broken = structured_frames()
    STRUCTURED_BREAKS["fp16_within_0_1_point_of_fp32"](broken)  # an FP16 failure does not change the count
    ov = SimpleNamespace(runtime="openvino")
    assert C.count_line(structured_checks(broken, ov)) == C.count_line(structured_checks(structured_frames(), ov))
    assert {c.key: c.kind for c in mixed_checks(mixed_rows())}["pruning_alone_keeps_size"] == "sanity"


def test_a_group_tests_only_its_own_models_claims():
    """Study 000's MobileNetV2 folder cannot test the ResNet-18 INT8 claims: untestable, not counted."""
    frame = approx_table()
    approx_set(frame, 70, "finetuned", ms=3.0)  # the MobileNetV2 table has 0 and 50% only
    results = published_results(approx_checks(frame, "mobilenetv2_c10"))
    assert results["dynamic_int8_slower"] is None and results["best_at_70pct"] is None
    assert results["pruning_raises_accuracy"] is True and results["latency_flat_across_ratios"] is True


@pytest.mark.parametrize(("model", "published", "label"), [
    ({"arch": "resnet56", "pretrained": "x.th"}, "ResNet-18", "ResNet-56 standing in for ResNet-18"),
    ({"arch": "resnet8", "width": 8}, "ResNet-20", "ResNet-8 (width 8) standing in for ResNet-20"),
    ({"arch": "resnet18_imagenet", "input_size": 224}, "ResNet-18", "ResNet-18"),
    ({"arch": "mobilenet_v2"}, "MobileNetV2", "MobileNetV2"),
    ({"arch": "vgg16_bn_imagenet"}, "VGG16-BN", "VGG16-BN"),
    ({"arch": "resnet20", "width": 16}, "ResNet-20", "ResNet-20"),
    ({"arch": "mypkg.nets:tiny"}, "ResNet-18", "mypkg.nets:tiny standing in for ResNet-18"),
])
def test_the_model_run_is_named_where_it_stands_in(model, published, label):
    assert C.model_label({"model": model}, published) == label
