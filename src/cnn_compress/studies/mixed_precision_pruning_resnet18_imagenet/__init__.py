"""mixed_precision_pruning_resnet18_imagenet (studies/mixed-precision-pruning-resnet18-imagenet/): what
do INT8, FP16 and INT8-with-an-FP32-classifier each cost in top-5 accuracy, size and CPU time when the
quantized weights are then magnitude-pruned without fine-tuning, against pruning alone? Study 003 of
``shared/studies`` (torchvision's ImageNet ResNet-18 on 1,000 validation images in the source).

Every published table is one model measured on CPU and GPU. Ours fills the CPU row of each from one
artifact: ``dense``'s ``fp32`` (the baseline), the ``qp`` variant's artifacts (quantized, then pruned
with ``prune.order: after_quantize``), ``mixed``'s ``int8_mixed`` and ``pruned``'s ``fp32``. Accuracy
and sizes come from each variant's benchmark stage; this module times every artifact again together
(one process, round-robin rounds, batch 1) and checks the published claims' shape.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd

from cnn_compress.core.config import require
from cnn_compress.core.errors import ConfigError, UserError
from cnn_compress.studies.checks import SAME_POINTS, Check, as_metrics, beyond, claim, model_label, sanity, untestable
from cnn_compress.studies.registry import StudyContext, register_study

NAME = "mixed_precision_pruning_resnet18_imagenet"
PUBLISHED = "mixed-precision-pruning-resnet18-imagenet.yaml"
COLUMNS = ["inference_time_ms", "model_size_MB", "top5_acc_pct"]


def _rows_from(value: Any, key: str) -> tuple[tuple[str, str], ...]:
    require(isinstance(value, dict) and value, key, f"must map published tables to variant/artifact, got {value!r}")
    return tuple((str(k), str(v)) for k, v in value.items())


@dataclass(frozen=True)
class MixedPruneConfig:
    SECTION: ClassVar[str] = f"study.{NAME}"
    COERCE: ClassVar[dict[str, Any]] = {"rows": _rows_from}
    scale: Literal["smoke", "cpu", "paper"] = "smoke"
    # published table -> "variant/artifact" filling its CPU row
    rows: tuple[tuple[str, str], ...] = (
        ("fp32_baseline", "dense/fp32"), ("int8_pruned", "qp/int8_static"), ("fp16_pruned", "qp/fp16"),
        ("mixed_precision_pruned", "mixed/int8_mixed"), ("pruned_only_fp32", "pruned/fp32"))
    threads: int = 1
    rounds: int = 15
    max_seconds: float = 2.0

    def __post_init__(self) -> None:
        known = {"fp32_baseline", "int8_pruned", "fp16_pruned", "mixed_precision_pruned", "pruned_only_fp32"}
        for table, ref in self.rows:
            require(table in known, f"{self.SECTION}.rows", f"'{table}' is not a published table ({', '.join(sorted(known))})")
            require(ref.count("/") == 1, f"{self.SECTION}.rows.{table}", f"must be variant/artifact, got {ref!r}")
        require(self.rounds >= 3, f"{self.SECTION}.rounds", "must be >= 3")




def measured(cfg: MixedPruneConfig, variants: list[str], times: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Ours, one row per published table: the artifact's top-5, size (decimal MB), CPU ms and sparsity."""
    recs = []
    for table, ref in cfg.rows:
        variant, artifact = ref.split("/")
        if variant not in variants:
            raise ConfigError(f"study.{NAME}.rows.{table}: '{variant}' is not a variant of this study folder")
        try:
            row = json.loads(Path("variants", variant, "benchmark.json").read_text())["artifacts"][artifact]
        except (OSError, ValueError) as exc:
            raise UserError(f"study: variant {variant} has no benchmark results ({exc})") from None
        except KeyError:
            raise ConfigError(f"study.{NAME}.rows.{table}: variant '{variant}' builds no artifact '{artifact}'") from None
        recs.append({"table": table, "artifact": ref, "top5_acc_pct": row["top5"], "top1": row["top1"],
                     "model_size_MB": round(row["size_bytes"] / 1e6, 3),
                     "ccz_MB": round(row.get("size_compressed_bytes", row["size_bytes"]) / 1e6, 3),
                     "sparsity": row.get("sparsity", 0.0), "inference_time_ms": times[ref]["ms"],
                     "ms ci95": times[ref]["ci"]})
    return pd.DataFrame(recs)


def tables(ours: pd.DataFrame, study: dict[str, Any] | None) -> dict[str, pd.DataFrame]:
    """Each published table (CPU and GPU rows) with our CPU row beside its CPU row."""
    from cnn_compress.studies.common import published_table, side_by_side

    base = float(ours.set_index("table").top5_acc_pct.get("fp32_baseline", ours.top5_acc_pct.iloc[0]))
    out = {}
    for r in ours.itertuples():
        pub = published_table(study, r.table)
        pub_base = None
        if pub is not None:
            ref = published_table(study, "fp32_baseline")
            pub_base = float(ref.set_index("device").top5_acc_pct["CPU"])
        mine = pd.DataFrame([{"device": "CPU", **{c: getattr(r, c) for c in COLUMNS}, "artifact": r.artifact}])
        out[r.table] = side_by_side(mine, pub, ["device"], COLUMNS, {"top5_acc_pct": (base, pub_base)})
    return out


def shape_checks(ours: pd.DataFrame) -> list[Check]:
    """Study 003's published claims on our CPU rows (the GPU rows have no counterpart here)."""
    at = ours.set_index("table")
    base, int8, fp16 = at.loc["fp32_baseline"], at.loc["int8_pruned"], at.loc["fp16_pruned"]
    mixed, pruned = at.loc["mixed_precision_pruned"], at.loc["pruned_only_fp32"]
    drops = [round(base.top5_acc_pct - r.top5_acc_pct, 2) for r in (int8, fp16, mixed)]
    return [
        untestable("baseline_figures", "FP32 baseline: 46.83 MB, top-5 89%, 14.36 ms CPU (`fp32_baseline`, claim 1)",
                   "absolute figures of one model: shown beside ours in the tables (`diff`), not a shape"),
        claim("int8_about_4x_smaller", "INT8 + pruning at most 0.35x the FP32 file (46.83 -> 11.83 MB; `int8_pruned`, "
              "claim 2)", int8.model_size_MB <= 0.35 * base.model_size_MB),
        claim("quantize_then_prune_costs_accuracy", f"INT8 + pruning loses more than {SAME_POINTS:g} top-5 point (89 "
              "-> 76.45%; `int8_pruned`, claim 2)", beyond(base.top5_acc_pct, int8.top5_acc_pct)),
        claim("int8_pruned_slower_on_cpu", "INT8 + pruning runs slower than FP32 on CPU (14.36 -> 782 ms; `int8_pruned`, "
              "claim 2)", int8.inference_time_ms > base.inference_time_ms),
        claim("fp16_pruned_costs_accuracy", f"FP16 + pruning loses more than {SAME_POINTS:g} top-5 point (89 -> "
              "81.98%; `fp16_pruned`, claim 3)", beyond(base.top5_acc_pct, fp16.top5_acc_pct)),
        claim("fp16_pruned_slower_on_cpu", "FP16 + pruning runs slower than FP32 on CPU (14.36 -> 16.55 ms; "
              "`fp16_pruned`, claim 3)", fp16.inference_time_ms > base.inference_time_ms),
        claim("fp32_classifier_recovers_part_of_int8_loss", f"an FP32 classifier lifts INT8 + pruning's top-5 but not "
              f"to FP32's, each by more than {SAME_POINTS:g} point (76.45 < 79.23 < 89%; `mixed_precision_pruned`, "
              "claim 4)", beyond(mixed.top5_acc_pct, int8.top5_acc_pct) and beyond(base.top5_acc_pct, mixed.top5_acc_pct)),
        claim("mixed_faster_than_int8_on_cpu", "the FP32-classifier model runs faster than INT8 + pruning on CPU "
              "(80.82 against 782 ms; `mixed_precision_pruned`, claim 4)", mixed.inference_time_ms < int8.inference_time_ms),
        claim("pruning_alone_keeps_accuracy", f"pruning alone within {SAME_POINTS:g} top-5 point of FP32 (89 -> 89.54%; "
              "`pruned_only_fp32`, claim 5)", abs(pruned.top5_acc_pct - base.top5_acc_pct) <= SAME_POINTS),
        claim("pruning_alone_faster_on_cpu", "pruning alone runs faster than FP32 on CPU (14.36 -> 12.11 ms; "
              "`pruned_only_fp32`, claim 5)", pruned.inference_time_ms < base.inference_time_ms),
        claim("quantized_pruned_cost_7_to_13_points", "INT8, FP16 and mixed, each pruned, cost 7-13 top-5 points "
              "(12.55, 7.02, 9.77; claim 8)", all(7 <= d <= 13 for d in drops)),
        untestable("gpu_rows", "GPU times and accuracies (every table's GPU row, claims 2-5, 8)", "CPU only here"),
        untestable("custom_pruning_routines", "torch pruning does not apply to quantized modules; quantize-then-prune "
                   "was chosen (claims 6-7)", "statements about the method, not results"),
        sanity("fp16_about_2x_smaller", "FP16 + pruning at most 0.6x the FP32 file (23.43 MB; `fp16_pruned`, claim 3)",
               fp16.model_size_MB <= 0.6 * base.model_size_MB, "FP16 stores 2 bytes a weight: half by construction"),
        sanity("pruning_alone_keeps_size", "pruning alone keeps the file size (44.96 MB; `pruned_only_fp32`, claim 5)",
               pruned.model_size_MB >= 0.9 * base.model_size_MB, "pruned weights are stored dense: the file cannot shrink"),
    ]


@register_study(NAME, MixedPruneConfig)
def run(cfg: MixedPruneConfig, ctx: StudyContext) -> dict[str, Any]:
    from cnn_compress.core.stage import PREPARED
    from cnn_compress.data.dataset import load_dataset
    from cnn_compress.measure.benchmark import collect_artifacts, machine_info
    from cnn_compress.studies.common import published, time_together
    from cnn_compress.studies.mixed_precision_pruning_resnet18_imagenet import report

    files = {}
    for _, ref in cfg.rows:
        variant, artifact = ref.split("/")
        found = {n: p for n, p, _ in collect_artifacts(Path("variants", variant))} if variant in ctx.variants else {}
        if artifact in found:
            files[ref] = found[artifact]
    times = time_together(files, load_dataset(PREPARED), cfg.threads, cfg.rounds, cfg.max_seconds)
    ours = measured(cfg, ctx.variants, times)
    study = published(PUBLISHED)
    frames = tables(ours, study)
    checks = shape_checks(ours)
    report.write(ctx.out, cfg, frames, ours, checks, machine_info(cfg.threads), study is not None,
                 model_label(ctx.params, "ResNet-18"))
    return {**{f"{r.table}_top5": float(r.top5_acc_pct) for r in ours.itertuples()},
            **{f"{r.table}_ms": float(r.inference_time_ms) for r in ours.itertuples()}, **as_metrics(checks)}
