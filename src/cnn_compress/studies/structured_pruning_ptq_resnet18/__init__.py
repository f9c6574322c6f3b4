"""structured_pruning_ptq_resnet18 (studies/structured-pruning-ptq-resnet18/): how far can structured
L1 filter pruning go before accuracy is lost, and what do FP16 / INT8 post-training quantization add
on top? Study 001 of ``shared/studies`` (ResNet-18 + TensorRT on a GPU in the source).

Each variant of the folder is one pruning ratio, fine-tuned with the schedule that grows with the
ratio (``finetune.by_ratio``). Accuracy before and after fine-tuning, parameters and sizes come from
each variant's benchmark stage (measured from the artifact). This module times every artifact the
tables name again *together* (one process, round-robin rounds, batch 1), lays the rows beside the
published ones and checks the published shape. ``runtime`` says which runtime stands in for
TensorRT: its FP32 / FP16 / INT8 artifacts are the format rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from cnn_compress.core.config import require
from cnn_compress.core.errors import ConfigError, UserError
from cnn_compress.measure.benchmark import collect_artifacts
from cnn_compress.studies.checks import as_metrics, model_label, model_name
from cnn_compress.studies.registry import StudyContext, register_study

NAME = "structured_pruning_ptq_resnet18"
PUBLISHED = "structured-pruning-ptq-resnet18.yaml"
# the runtime standing in for TensorRT -> the artifact of each published format (FP16: OpenVINO's
# FP16-weight IR; every OpenVINO artifact here is compiled with f32 inference precision, so its row
# differs from FP32 in the stored weights only; ONNX Runtime's FP16 row is the PyTorch FP16 checkpoint)
RUNTIMES = {
    "openvino": {"FP32": "openvino_fp32", "FP16": "openvino_fp16", "INT8": "openvino_int8"},
    "onnxruntime": {"FP32": "onnx", "FP16": "fp16", "INT8": "ort_int8"},
    "tensorrt": {"FP32": "tensorrt_fp32", "FP16": "tensorrt_fp16", "INT8": "tensorrt_int8"},
}
EAGER = "finetuned"  # the sweep's latency column: the published sweep timed PyTorch eager


@dataclass(frozen=True)
class StructuredPtqConfig:
    SECTION: ClassVar[str] = f"study.{NAME}"
    scale: Literal["smoke", "cpu", "paper"] = "smoke"
    runtime: Literal["openvino", "onnxruntime", "tensorrt"] = "openvino"
    dense: str = "dense"  # the unpruned variant: the baseline and the unpruned format rows
    threads: int = 1
    rounds: int = 15  # round-robin timing rounds at batch 1
    max_seconds: float = 2.0  # per artifact
    # the AMP-vs-FP32 table: two unpruned variants fine-tuned alike but for finetune.amp ("" = not measured)
    fp32_training: str = ""
    amp_training: str = ""

    def __post_init__(self) -> None:
        require(self.threads >= 1, f"{self.SECTION}.threads", "must be >= 1")
        require(self.rounds >= 3, f"{self.SECTION}.rounds", "must be >= 3")
        require(self.max_seconds > 0, f"{self.SECTION}.max_seconds", "must be > 0")
        require(bool(self.fp32_training) == bool(self.amp_training), f"{self.SECTION}.amp_training",
                "name both fp32_training and amp_training, or neither")
        require(not self.amp_training or self.fp32_training != self.amp_training, f"{self.SECTION}.amp_training",
                "must name another variant than fp32_training")
        require(self.dense not in (self.fp32_training, self.amp_training), f"{self.SECTION}.dense",
                "must not be one of the AMP table's variants (they are left out of the sweep)")


@dataclass
class Variant:
    """One pruning ratio: its resolved ratio and fine-tuning, and every artifact's benchmark row."""

    name: str
    pct: int
    ft_lr: float
    ft_epochs: int
    rows: dict[str, dict[str, Any]]
    files: dict[str, Path]


def read_variant(name: str) -> Variant:
    base = Path("variants", name)
    try:
        rows = json.loads((base / "benchmark.json").read_text())["artifacts"]
        ratio = float(json.loads(Path("configs", name, "prune.json").read_text())["prune"]["ratio"])
        ft = json.loads((base / "finetune.json").read_text())
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"study: variant {name} has no benchmark results ({exc})") from None
    files = {n: p for n, p, _ in collect_artifacts(base)}
    return Variant(name, round(100 * ratio), float(ft["lr"]), int(ft["epochs"]), rows, files)


def timed_keys(variants: list[Variant], cfg: StructuredPtqConfig) -> list[tuple[Variant, str]]:
    """(variant, artifact) pairs the tables report a latency for, where the variant built them."""
    wanted = (EAGER, *RUNTIMES[cfg.runtime].values(), *(a for names in RUNTIMES.values() for a in names.values()))
    return [(v, a) for v in variants for a in dict.fromkeys(wanted) if a in v.files and a in v.rows]


def time_all(pairs: list[tuple[Variant, str]], cfg: StructuredPtqConfig, ds: Any) -> dict[str, dict[str, Any]]:
    """Median and 95% interval (ms, batch 1) of every pair, timed interleaved in this process."""
    from cnn_compress.studies.common import time_together

    return time_together({f"{v.name}/{a}": v.files[a] for v, a in pairs}, ds, cfg.threads, cfg.rounds, cfg.max_seconds)


def measured(v: Variant, artifact: str, times: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """One artifact's figures in the published units (MiB, millions of parameters, ms, %)."""
    row = v.rows.get(artifact)
    if row is None:
        return None
    t = times.get(f"{v.name}/{artifact}", {})
    return {"size_MB": round(row["size_bytes"] / 2**20, 3), "params_M": round(row["params"] / 1e6, 3),
            "ms": t.get("ms"), "ms ci95": t.get("ci"), "acc": row["top1"],
            "ccz_MB": round(row.get("size_compressed_bytes", row["size_bytes"]) / 2**20, 3)}


def training_runs(cfg: StructuredPtqConfig, names: list[str]) -> dict[str, str]:
    """{"FP32": variant, "AMP": variant} of the training-precision table, checked; {} when not set."""
    runs = {"FP32": cfg.fp32_training, "AMP": cfg.amp_training} if cfg.amp_training else {}
    for label, name in runs.items():
        if name not in names:
            key = "fp32_training" if label == "FP32" else "amp_training"
            raise ConfigError(f"study.{NAME}.{key}: '{name}' is not a variant of this study folder")
    return runs


@register_study(NAME, StructuredPtqConfig)
def run(cfg: StructuredPtqConfig, ctx: StudyContext) -> dict[str, Any]:
    from cnn_compress.core.stage import PREPARED
    from cnn_compress.data.dataset import load_dataset
    from cnn_compress.measure.benchmark import machine_info
    from cnn_compress.studies.common import published
    from cnn_compress.studies.structured_pruning_ptq_resnet18 import tables

    if cfg.dense not in ctx.variants:
        raise ConfigError(f"study.{NAME}.dense: '{cfg.dense}' is not a variant of this study folder")
    amp_runs = training_runs(cfg, ctx.variants)
    variants = sorted((read_variant(v) for v in ctx.variants if v not in amp_runs.values()), key=lambda v: v.pct)
    dense = next(v for v in variants if v.name == cfg.dense)
    if dense.pct != 0:
        raise ConfigError(f"study.{NAME}.dense: variant '{cfg.dense}' is pruned ({dense.pct}%), not the baseline")
    times = time_all(timed_keys(variants, cfg), cfg, load_dataset(PREPARED))
    run_model = model_name(ctx.params.get("model"))
    frames = tables.build(variants, dense, cfg, times, published(PUBLISHED), amp_runs, run_model)
    checks = tables.shape_checks(frames, cfg)
    tables.write(ctx.out, cfg, frames, checks, machine_info(cfg.threads), published(PUBLISHED) is not None,
                 model_label(ctx.params, "ResNet-18"))
    sweep = frames["structured_pruning_sweep_c10"].dropna(subset=["acc_after_ft_pct ours"])
    return {"baseline_top1": dense.rows[EAGER]["top1"], "ratios": len(sweep),
            **{f"drop_after_ft_{int(r.prune_pct)}": float(r["acc_after_ft_pct drop ours"]) for _, r in sweep.iterrows()},
            **as_metrics(checks)}
