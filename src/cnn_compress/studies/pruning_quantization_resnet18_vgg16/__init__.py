"""pruning_quantization_resnet18_vgg16 (studies/pruning-quantization-resnet18-vgg16/): what do dynamic
and static INT8 post-training quantization, QAT and 30% structured L1 pruning each do to accuracy,
size and CPU latency, and what do pruning and INT8 give together? Study 002 of ``shared/studies``
(ImageNet-pretrained ResNet-18 and VGG16-BN fine-tuned on CIFAR-10 at 224x224 in the source).

A folder answers one published summary table (``table``): its variants are the unpruned model, the
30%-structured model and (ours) the 30%-unstructured one, each building FP32, dynamic INT8, static
INT8 and QAT INT8 artifacts. Accuracy, parameters and sizes come from each variant's benchmark
stage (measured from the artifact); this module times every artifact again *together* (one process,
round-robin rounds, batch 1, PyTorch eager as in the source), lays the rows beside the published
ones and checks the published claims' shape.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd

from cnn_compress.core.config import require
from cnn_compress.core.errors import ConfigError, UserError
from cnn_compress.studies.checks import (
    CHANCE_PCT,
    LATENCY_SAME,
    SAME_POINTS,
    Check,
    as_metrics,
    beyond,
    claim,
    model_label,
    own,
    sanity,
    untestable,
)
from cnn_compress.studies.registry import StudyContext, register_study

NAME = "pruning_quantization_resnet18_vgg16"
PUBLISHED = "pruning-quantization-resnet18-vgg16.yaml"
FORMATS = {"FP32": "finetuned", "dynamic INT8": "int8_dynamic", "static INT8": "int8_static", "QAT INT8": "int8_qat"}
# published row -> (variant role, artifact). The VGG row printed as "Pruning + QAT" is, by its own log,
# pruning followed by dynamic INT8 (the study's gaps list says so): that is the artifact compared.
ROWS = {
    "resnet18_summary": {"Baseline": ("dense", "finetuned"), "Dynamic Quantisation": ("dense", "int8_dynamic"),
                         "Static Quantisation": ("dense", "int8_static"), "QAT int_8": ("dense", "int8_qat"),
                         "Structured Pruning": ("structured", "finetuned"), "QAT + Pruning": ("structured", "int8_qat")},
    "vgg16bn_summary": {"Baseline": ("dense", "finetuned"), "Dynamic Quantisation": ("dense", "int8_dynamic"),
                        "Static Quantisation": ("dense", "int8_static"), "QAT": ("dense", "int8_qat"),
                        "Pruning": ("structured", "finetuned"), "Pruning + QAT": ("structured", "int8_dynamic")},
}
COLUMNS = ["accuracy_pct", "size_MB", "latency_ms", "total_params_M", "trainable_params_M"]


@dataclass(frozen=True)
class PruneQuantConfig:
    SECTION: ClassVar[str] = f"study.{NAME}"
    scale: Literal["smoke", "cpu", "paper"] = "smoke"
    table: Literal["resnet18_summary", "vgg16bn_summary"] = "resnet18_summary"  # the published table answered
    dense: str = "dense"  # unpruned: the baseline and the quantization rows
    structured: str = "structured"  # 30% structured L1 channel pruning, fine-tuned
    unstructured: str = ""  # ours: 30% unstructured L1, fine-tuned ("" = not built)
    threads: int = 1
    rounds: int = 15  # round-robin timing rounds at batch 1
    max_seconds: float = 2.0  # per artifact and round set
    # artifacts (of every variant) also timed under torch.compile: PT2E INT8 programs run their
    # quantize / dequantize ops one by one in eager mode; inductor fuses them into INT8 kernels
    compile: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        require(self.threads >= 1, f"{self.SECTION}.threads", "must be >= 1")
        require(self.rounds >= 3, f"{self.SECTION}.rounds", "must be >= 3")
        require(self.max_seconds > 0, f"{self.SECTION}.max_seconds", "must be > 0")
        for name in self.compile:
            require(name in FORMATS.values(), f"{self.SECTION}.compile",
                    f"'{name}' is not one of the study's artifacts ({', '.join(FORMATS.values())})")

    def roles(self) -> dict[str, str]:
        return {"dense": self.dense, "structured": self.structured, **({"unstructured": self.unstructured}
                                                                         if self.unstructured else {})}


def read_rows(variant: str) -> dict[str, dict[str, Any]]:
    try:
        return json.loads(Path("variants", variant, "benchmark.json").read_text())["artifacts"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"study: variant {variant} has no benchmark results ({exc})") from None


def grid(cfg: PruneQuantConfig, rows: dict[str, dict[str, dict[str, Any]]],
         times: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Ours: pruning (none / structured / unstructured) x format, in the published units."""
    base = rows["dense"]["finetuned"]["top1"]
    recs = []
    for role, variant in cfg.roles().items():
        for (fmt, artifact), runtime in ((f, rt) for f in FORMATS.items() for rt in ("eager", "compiled")):
            row = rows[role].get(artifact)
            if row is None:
                raise ConfigError(f"study.{NAME}: variant '{variant}' builds no artifact '{artifact}' "
                                  f"(its quantize.formats must list {artifact})")
            if runtime == "compiled" and artifact not in cfg.compile:
                continue
            t = times[f"{variant}/{artifact}" + ("+compile" if runtime == "compiled" else "")]
            recs.append({"pruning": role if role != "dense" else "none", "format": fmt, "runtime": runtime,
                         "variant": variant,
                         "artifact": artifact, "top1": row["top1"], "drop_pts": round(base - row["top1"], 2),
                         "size_MB": round(row["size_bytes"] / 1e6, 3),
                         "ccz_MB": round(row.get("size_compressed_bytes", row["size_bytes"]) / 1e6, 3),
                         "params_M": round(row["params"] / 1e6, 4),
                         "nonzero_params_M": round(row.get("params_nonzero", row["params"]) / 1e6, 4),
                         "MMACs": round(row.get("macs", 0) / 1e6, 2), "ms": t["ms"], "ms ci95": t["ci"]})
    frame = pd.DataFrame(recs)
    fp32 = frame[(frame.pruning == "none") & (frame.format == "FP32") & (frame.runtime == "eager")].iloc[0]
    return frame.assign(speedup=(fp32.ms / frame.ms).round(2), smaller=(fp32.size_MB / frame.size_MB).round(2))


def summary(cfg: PruneQuantConfig, ours: pd.DataFrame, pub: pd.DataFrame | None) -> pd.DataFrame:
    """The published summary table with our row beside each (trainable params: not measured)."""
    from cnn_compress.studies.common import side_by_side

    by = ours[ours.runtime == "eager"].set_index(["pruning", "artifact"])  # the source timed eager PyTorch
    recs = []
    for label, (role, artifact) in ROWS[cfg.table].items():
        r = by.loc[(role if role != "dense" else "none", artifact)]
        recs.append({"model": label, "accuracy_pct": r.top1, "size_MB": r.size_MB, "latency_ms": r.ms,
                     "total_params_M": r.params_M, "artifact": f"{r.variant}/{artifact}"})
    frame = pd.DataFrame(recs)
    base = float(frame.accuracy_pct.iloc[0])
    pub_base = None
    if pub is not None:
        pub = pub.assign(**{c: pd.to_numeric(pub[c], errors="coerce") for c in COLUMNS})
        pub_base = float(pub.accuracy_pct.iloc[0])
    order = {label: i for i, label in enumerate(ROWS[cfg.table])}
    out = side_by_side(frame, pub, ["model"], COLUMNS, {"accuracy_pct": (base, pub_base)})
    return out.sort_values("model", key=lambda s: s.map(order)).reset_index(drop=True)


PUBLISHED_MODEL = {"resnet18_summary": "ResNet-18", "vgg16bn_summary": "VGG16-BN"}


def shape_checks(g: pd.DataFrame, cfg: PruneQuantConfig) -> list[Check]:
    """Study 002's published claims on our rows (eager PyTorch, as the source timed): each summary table's own."""
    at = g[g.runtime == "eager"].set_index(["pruning", "format"])
    fp32, dyn, st, qat = (at.loc[("none", f)] for f in FORMATS)
    sp = at.loc[("structured", "FP32")]
    t = f"`{cfg.table}`"
    resnet = cfg.table == "resnet18_summary"
    n, pub = (("3", "44.81 -> 11.31 MB, 83.34 -> 31.60 ms, 92.49 -> 91.80%") if resnet  # static INT8's claim
              else ("9", "537.31 -> 134.57 MB, 355.76 -> 239.73 ms, 90.73 -> 90.90%"))
    checks = [
        untestable("baseline_figures", f"the baseline's own figures (claim {'1' if resnet else '7'})",
                   "absolute figures of one model: shown beside ours in the table (`diff`), not a shape"),
        claim("static_int8_about_4x_smaller", f"static INT8 about 4x smaller, at most 0.35x the FP32 file ({pub}; {t}, "
              f"claim {n})", st.size_MB <= 0.35 * fp32.size_MB),
        claim("static_int8_faster_than_fp32", f"static INT8 faster than FP32 on CPU ({t}, claim {n})", st.ms < fp32.ms),
        claim("static_int8_keeps_accuracy", f"static INT8 within {SAME_POINTS:g} point of FP32 ({t}, claim {n})",
              abs(st.top1 - fp32.top1) <= SAME_POINTS),
        sanity("structured_fewer_params", f"30% structured pruning leaves fewer parameters ({t}, claim {'5' if resnet else '11'})",
               sp.params_M < fp32.params_M, "channels are removed: fewer parameters by construction"),
    ]
    if resnet:
        sp_qat = at.loc[("structured", "QAT INT8")]
        others = [fp32, dyn, st, qat, sp]  # the other published rows
        checks += [
            claim("dynamic_int8_keeps_accuracy", f"dynamic INT8 within {SAME_POINTS:g} point of FP32 (92.49 -> 92.54%; "
                  f"{t}, claim 2)", abs(dyn.top1 - fp32.top1) <= SAME_POINTS),
            claim("dynamic_int8_latency_barely_changes", f"dynamic INT8 within {LATENCY_SAME:.0%} of FP32's latency "
                  f"(83.34 -> 85.14 ms; {t}, claim 2)", abs(dyn.ms / fp32.ms - 1) <= LATENCY_SAME),
            sanity("dynamic_int8_size_barely_changes", f"dynamic INT8 keeps the file size (44.81 -> 44.79 MB; {t}, claim 2)",
                   dyn.size_MB >= 0.5 * fp32.size_MB, "only the classifier becomes INT8: near-equal by construction"),
            claim("qat_above_baseline", f"QAT INT8 ends more than {SAME_POINTS:g} point above the FP32 baseline "
                  f"(94.72 against 92.49%; {t}, claim 4)", beyond(qat.top1, fp32.top1)),
            claim("structured_costs_accuracy", f"30% structured pruning ends more than {SAME_POINTS:g} point below "
                  f"the baseline (84.42 against 92.49%; {t}, claim 5)", beyond(fp32.top1, sp.top1)),
            claim("structured_faster_than_fp32", f"30% structured pruning runs faster (83.34 -> 21.21 ms; {t}, claim 5)",
                  sp.ms < fp32.ms),
            claim("pruned_qat_smallest", f"pruning + QAT INT8 is the smallest row (2.79 MB; {t}, claim 6)",
                  sp_qat.size_MB < min(r.size_MB for r in others)),
            claim("pruned_qat_fastest", f"pruning + QAT INT8 is the fastest row (13.56 ms; {t}, claim 6)",
                  sp_qat.ms < min(r.ms for r in others)),
            untestable("vgg16bn_claims", "VGG16-BN's claims 7-11 (`vgg16bn_summary`)",
                       "this folder answers `resnet18_summary`; a `table: vgg16bn_summary` folder tests them"),
        ]
    else:
        sp_dyn = at.loc[("structured", "dynamic INT8")]
        checks += [
            claim("dynamic_int8_collapses", f"dynamic INT8 collapses to chance, at most {CHANCE_PCT:g}% (11.09%; {t}, "
                  "claim 8)", dyn.top1 <= CHANCE_PCT),
            own("dynamic_int8_keeps_accuracy", f"dynamic INT8 of the trained model within {SAME_POINTS:g} point of FP32 "
                "(the published collapse came from an untrained classifier, the study's gaps say)",
                abs(dyn.top1 - fp32.top1) <= SAME_POINTS),
            untestable("qat_not_run", f"VGG16-BN QAT could not be run on CPU ({t}, claim 10)", "not a result"),
            claim("pruning_raises_accuracy", f"30% channel pruning + fine-tuning ends above its starting model by "
                  f"more than {SAME_POINTS:g} point (79.45 -> 84.26%; {t}, claim 11; our start is the FP32 baseline)",
                  beyond(sp.top1, fp32.top1)),
            claim("pruned_dynamic_int8_smaller_than_pruned", f"dynamic INT8 shrinks the pruned model (63.08 -> 36.55 MB; "
                  f"{t}, claim 11)", sp_dyn.size_MB < sp.size_MB),
            claim("pruned_dynamic_int8_keeps_accuracy", f"dynamic INT8 of the pruned model within {SAME_POINTS:g} point "
                  f"of it (84.26 -> 84.24%; {t}, claim 11)", abs(sp_dyn.top1 - sp.top1) <= SAME_POINTS),
            untestable("resnet18_claims", "ResNet-18's claims 1-6 (`resnet18_summary`)",
                       "this folder answers `vgg16bn_summary`; a `table: resnet18_summary` folder tests them"),
        ]
    if cfg.unstructured:
        un = at.loc[("unstructured", "FP32")]
        checks.append(own("unstructured_no_speedup", "30% unstructured pruning does not speed up dense kernels (within "
                          "10% of FP32)", un.ms >= 0.9 * fp32.ms))
    fast = g[(g.runtime == "compiled") & (g.pruning == "none")].set_index("format")
    if {"FP32", "static INT8"} <= set(fast.index):
        checks.append(own("static_int8_compiled_faster_than_fp32_compiled", "static INT8 pays once inductor fuses its "
                          "ops (both under torch.compile)", fast.loc["static INT8"].ms < fast.loc["FP32"].ms))
    return checks


@register_study(NAME, PruneQuantConfig)
def run(cfg: PruneQuantConfig, ctx: StudyContext) -> dict[str, Any]:
    from cnn_compress.core.stage import PREPARED
    from cnn_compress.data.dataset import load_dataset
    from cnn_compress.measure.benchmark import collect_artifacts, machine_info
    from cnn_compress.studies.common import published, published_table, time_together
    from cnn_compress.studies.pruning_quantization_resnet18_vgg16 import report

    for role, variant in cfg.roles().items():
        if variant not in ctx.variants:
            raise ConfigError(f"study.{NAME}.{role}: '{variant}' is not a variant of this study folder")
    rows = {role: read_rows(v) for role, v in cfg.roles().items()}
    files = {}
    for variant in cfg.roles().values():
        found = {n: p for n, p, _ in collect_artifacts(Path("variants", variant))}
        files |= {f"{variant}/{a}": found[a] for a in FORMATS.values() if a in found}
        files |= {f"{variant}/{a}+compile": found[a] for a in cfg.compile if a in found}
    compiled = frozenset(k for k in files if k.endswith("+compile"))
    times = time_together(files, load_dataset(PREPARED), cfg.threads, cfg.rounds, cfg.max_seconds, compiled)
    g = grid(cfg, rows, times)
    study = published(PUBLISHED)
    tables = {cfg.table: summary(cfg, g, published_table(study, cfg.table)), "grid": g}
    checks = shape_checks(g, cfg)
    report.write(ctx.out, cfg, tables, checks, machine_info(cfg.threads), study is not None,
                 model_label(ctx.params, PUBLISHED_MODEL[cfg.table]))
    return {"baseline_top1": float(g.top1.iloc[0]),
            **{f"{r.pruning}_{r.artifact}_top1": float(r.top1) for r in g.itertuples() if r.runtime == "eager"},
            **{f"{r.pruning}_{r.artifact}{'' if r.runtime == 'eager' else '_compiled'}_speedup": float(r.speedup)
               for r in g.itertuples()}, **as_metrics(checks)}
