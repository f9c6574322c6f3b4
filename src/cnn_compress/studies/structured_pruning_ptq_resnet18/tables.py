"""The tables of study 001 as data frames (published beside ours), the shape checks, and
results.md / results.csv / plots/study.csv / figures/."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cnn_compress.core import atomic
from cnn_compress.studies.checks import CHANCE_PCT, Check, claim, count_line, sanity, section, untestable
from cnn_compress.studies.common import (
    long_frame,
    machine_line,
    markdown,
    provenance,
    published_table,
    scale_note,
    side_by_side,
)

FORMATS = ("FP32", "FP16", "INT8")
SWEEP = "structured_pruning_sweep_c10"
PTQ = "ptq_resnet18_c10"
COMBINED = "pruning_plus_ptq_resnet18_c10"
AMP = "amp_vs_fp32_training"
SWEEP_COLS = ["size_MB", "params_M", "inference_ms_per_image", "acc_before_ft_pct", "acc_after_ft_pct", "ft_lr",
              "ft_epochs", "epoch_time_s"]  # the published sweep's columns
# tables this folder cannot measure, and why (their published rows are still shown)
NOT_MEASURED = {
    "ptq_resnet18_c100": "a CIFAR-100 model; every scale of this folder trains on CIFAR-10",
    "ptq_resnet20_c10": "a second model; this folder has one (ResNet-20's small-model question is study 004's)",
    "amp_vs_fp32_training": "no fp32_training / amp_training variants in this folder's study section",
    "tiny_imagenet_literature": "literature figures the study quotes, not an experiment",
}


def sweep_rows(variants: list[Any], times: dict[str, dict[str, Any]]) -> pd.DataFrame:
    from cnn_compress.studies.structured_pruning_ptq_resnet18 import EAGER, measured

    recs = []
    for v in variants:
        m = measured(v, EAGER, times)
        before = v.rows.get("pruned", {}).get("top1")
        recs.append({"prune_pct": v.pct, "size_MB": m["size_MB"], "params_M": m["params_M"],
                     "inference_ms_per_image": m["ms"], "acc_before_ft_pct": before, "acc_after_ft_pct": m["acc"],
                     "ft_lr": v.ft_lr, "ft_epochs": v.ft_epochs, "epoch_time_s": None, "variant": v.name,
                     "ms ci95": m["ms ci95"], "ccz_MB": m["ccz_MB"]})
    return pd.DataFrame(recs, columns=["prune_pct", *SWEEP_COLS, "variant", "ms ci95", "ccz_MB"])


def format_rows(variants: list[Any], cfg: Any, times: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Every (ratio, format) the substitute runtime built, plus the other CPU runtimes' FP32 / INT8."""
    from cnn_compress.studies.structured_pruning_ptq_resnet18 import RUNTIMES, measured

    recs = []
    for v in variants:
        for runtime, names in RUNTIMES.items():
            for fmt, artifact in names.items():
                m = measured(v, artifact, times)
                if m is None or (runtime != cfg.runtime and fmt == "FP16"):
                    continue
                label = fmt if runtime == cfg.runtime else f"{fmt} ({runtime})"
                recs.append({"prune_pct": v.pct, "format": label, "size_MB": m["size_MB"],
                             "trainable_params_M": m["params_M"], "inference_ms_per_image": m["ms"],
                             "test_acc_pct": m["acc"], "artifact": artifact, "ms ci95": m["ms ci95"],
                             "ccz_MB": m["ccz_MB"]})
    return pd.DataFrame(recs, columns=["prune_pct", "format", "size_MB", "trainable_params_M", "inference_ms_per_image",
                                       "test_acc_pct", "artifact", "ms ci95", "ccz_MB"])


def build(variants: list[Any], dense: Any, cfg: Any, times: dict[str, dict[str, Any]],
          study: dict[str, Any] | None, amp_runs: dict[str, str] | None = None, run: str = "") -> dict[str, pd.DataFrame]:
    base = float(dense.rows["finetuned"]["top1"])
    pub_sweep = published_table(study, SWEEP)
    pub_base = None if pub_sweep is None else float(pub_sweep.acc_before_ft_pct.iloc[0])
    accs = {c: (base, pub_base) for c in ("acc_before_ft_pct", "acc_after_ft_pct", "test_acc_pct")}
    frames = {SWEEP: side_by_side(sweep_rows(variants, times), pub_sweep, ["prune_pct"], SWEEP_COLS, accs)}
    fmts = format_rows(variants, cfg, times)
    measure_cols = ["size_MB", "trainable_params_M", "inference_ms_per_image", "test_acc_pct"]
    ptq_pub = _normalised(published_table(study, PTQ))
    frames[PTQ] = side_by_side(fmts[fmts.prune_pct == 0].drop(columns="prune_pct"), ptq_pub, ["format"],
                               measure_cols, accs)
    pruned = fmts[fmts.prune_pct > 0]
    frames[COMBINED] = side_by_side(pruned, published_table(study, COMBINED), ["prune_pct", "format"], measure_cols,
                                    accs)
    frames["final_results"] = final_rows(frames, study, cfg, run)
    if amp_runs:
        frames[AMP] = amp_rows(amp_runs, published_table(study, AMP))
    for table_id in NOT_MEASURED:
        pub = published_table(study, table_id)
        if pub is not None and table_id not in frames:
            frames[table_id] = pub.rename(columns={c: f"{c} pub" for c in pub.columns[1:]})
    return frames


def amp_rows(runs: dict[str, str], pub: pd.DataFrame | None) -> pd.DataFrame:
    """Fine-tuning with and without mixed precision: accuracy, and throughput as a ratio to FP32's."""
    from cnn_compress.studies.common import read_training

    got = {label: read_training(name) for label, name in runs.items()}
    fp32_speed = got["FP32"].get("train_images_per_s")
    recs = [{"training_precision": label, "test_acc_pct": r["top1"], "variant": runs[label], "amp": r.get("amp"),
             "images_per_s": r.get("train_images_per_s"),
             "speed_vs_fp32": round(r["train_images_per_s"] / fp32_speed, 3)
             if fp32_speed and r.get("train_images_per_s") else None} for label, r in got.items()]
    ours = pd.DataFrame(recs)
    base = float(got["FP32"]["top1"])
    pub_base = None if pub is None else float(pub.set_index("training_precision").test_acc_pct.get("FP32"))
    frame = side_by_side(ours, pub, ["training_precision"], ["test_acc_pct"], {"test_acc_pct": (base, pub_base)})
    if pub is not None:  # the published speed figure has no unit: shown, never compared
        speed = pub.set_index("training_precision")["training_speed_figure_unit_unstated"]
        frame["training_speed_figure_unit_unstated pub"] = frame.training_precision.map(speed)
    return frame


def _normalised(pub: pd.DataFrame | None) -> pd.DataFrame | None:
    """Published format labels as ours: "FP32 (TRT)" is the FP32 row (the runtime is the study's)."""
    if pub is None:
        return None
    return pub.assign(format=pub["format"].str.split(" ").str[0])


def final_rows(frames: dict[str, pd.DataFrame], study: dict[str, Any] | None, cfg: Any, run: str = "") -> pd.DataFrame:
    """The headline rows: the FP32 baseline and the study's pick (60% pruned + INT8), ours beside; ``model ours``
    names the model our figures are of (``run``, e.g. ResNet-56, where it stands in for ResNet-18)."""
    pub = published_table(study, "final_results")
    ptq, comb = frames[PTQ].set_index("format"), frames[COMBINED]
    picks = {"ResNet-18 (FP32)": ptq.loc["FP32"] if "FP32" in ptq.index else None}
    sixty = comb[(comb.prune_pct == 60) & (comb.format == "INT8")]
    picks["ResNet-18 pruned 60% + INT8"] = sixty.iloc[0] if len(sixty) else None
    recs = []
    for model, row in picks.items():
        ours = {} if row is None else {"size_MB": row.get("size_MB ours"), "test_acc_pct": row.get("test_acc_pct ours"),
                                       "inference_ms_per_image": row.get("inference_ms_per_image ours")}
        recs.append({"model": model, "model ours": model.replace("ResNet-18", run) if run else model,
                     **{f"{k} ours": v for k, v in ours.items()}, "runtime ours": cfg.runtime})
    frame = pd.DataFrame(recs)
    if pub is None:
        return frame
    return pub.rename(columns={c: f"{c} pub" for c in pub.columns[1:]}).merge(frame, on="model", how="left")


def shape_checks(frames: dict[str, pd.DataFrame], cfg: Any) -> list[Check]:
    """Study 001's published claims on our rows (a claim whose rows were not built is untestable)."""
    sweep = frames[SWEEP].dropna(subset=["acc_after_ft_pct ours"])
    pruned = sweep[sweep.prune_pct > 0]
    high = pruned[pruned.prune_pct >= 45]
    comb = pd.concat([frames[PTQ].assign(prune_pct=0), frames[COMBINED]])
    by = comb.pivot_table(index="prune_pct", columns="format", values="test_acc_pct ours")
    ms = comb.pivot_table(index="prune_pct", columns="format", values="inference_ms_per_image ours")

    def both(table: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
        return table[[a, b]].dropna() if {a, b} <= set(table.columns) else pd.DataFrame(columns=[a, b])

    def when(rows: Any, test: Any) -> bool | None:
        return bool(test()) if len(rows) else None

    int8, fp16 = both(by, "FP32", "INT8"), both(by, "FP32", "FP16")
    speed, fp16_speed = both(ms, "FP32", "INT8"), both(ms, "FP32", "FP16")
    after = pruned.set_index("prune_pct")["acc_after_ft_pct ours"]
    from50 = after[after.index >= 50]
    pick = by.loc[60, "INT8"] if 60 in by.index and "INT8" in by and pd.notna(by.loc[60, "INT8"]) else None
    int8_pruned = by.loc[by.index > 0, "INT8"].dropna() if "INT8" in by else pd.Series(dtype=float)
    base = by.loc[0, "FP32"] if 0 in by.index and "FP32" in by else None
    fast60 = ms.loc[60, "INT8"] < ms.loc[0, "FP32"] if {60, 0} <= set(ms.index) and {"INT8", "FP32"} <= set(ms.columns) \
        and ms.loc[60, "INT8"] > 0 and ms.loc[0, "FP32"] > 0 else None  # NaN compares False: > 0 means measured
    checks = [
        untestable("baseline_figures", "unpruned ResNet-18: 92.02%, 42.66 MB, 0.61 ms under TensorRT (claim 1)",
                   "absolute figures of one model: shown beside ours in the tables (`diff`), not a shape"),
        claim("before_ft_near_chance_from_45pct", f"right after pruning, top-1 under {CHANCE_PCT:g}% from 45% up "
              "(10.00-10.95%; `structured_pruning_sweep_c10`, claim 3)",
              when(high, lambda: (high["acc_before_ft_pct ours"] < CHANCE_PCT).all())),
        claim("ft_recovers_at_every_ratio", "fine-tuning lifts every pruned model (`structured_pruning_sweep_c10`, "
              "claim 3)", when(pruned, lambda: (pruned["acc_after_ft_pct ours"] >= pruned["acc_before_ft_pct ours"]).all())),
        claim("after_ft_lowest_at_highest_ratio", "after fine-tuning the highest ratio is the least accurate (61.63% "
              "at 90%; `structured_pruning_sweep_c10`, claim 3)",
              after.iloc[-1] <= after.min() if len(after) > 1 else None),
        untestable("larger_ratios_need_more_fine_tuning", "higher ratios needed larger learning rates and more epochs "
                   "(claim 4)", "our fine-tuning copies the published per-ratio schedule (`finetune.by_ratio`): an "
                   "input here, not a result"),
        claim("sixty_pct_best_from_50pct", "60% is the most accurate ratio from 50% up after fine-tuning, the pick "
              "(89.14%; `structured_pruning_sweep_c10`, claim 5)",
              after.loc[60] >= from50.max() if 60 in after.index else None),
        claim("int8_within_1_point_of_fp32", "INT8 within 1 point of FP32 at every ratio (+0.08 unpruned, -0.23 to "
              "+0.13 pruned; `ptq_resnet18_c10`, `pruning_plus_ptq_resnet18_c10`, claims 6, 8)",
              when(int8, lambda: ((int8.INT8 - int8.FP32).abs() <= 1.0).all())),
        claim("int8_faster_than_fp32", "INT8 faster than FP32 at every ratio (0.20 against 0.61 ms unpruned; "
              "`ptq_resnet18_c10`, `pruning_plus_ptq_resnet18_c10`, claims 6, 8)",
              when(speed, lambda: (speed.INT8 < speed.FP32).all())),
        claim("sixty_int8_most_accurate_int8", "60% + INT8 is the most accurate pruned INT8 model, the best combined "
              "model (89.03%; `pruning_plus_ptq_resnet18_c10`, claim 8)",
              pick >= int8_pruned.max() if pick is not None else None),
        claim("sixty_int8_drop_within_2_99_points", "60% + INT8 ends at most 2.99 points under unpruned FP32 (92.02 -> "
              "89.03; `final_results`, claim 8)", round(base - pick, 2) <= 2.99 if pick is not None and base is not None else None),
        claim("sixty_int8_faster_than_unpruned_fp32", "60% + INT8 runs faster than unpruned FP32 (0.12 against 0.61 ms, "
              "about 5x; `final_results`, claim 8)", fast60),
        untestable("cifar100_ptq", "ResNet-18 on CIFAR-100 keeps 79.26 / 79.22 / 79.07% in FP32 / FP16 / INT8 (claim 7)",
                   "no CIFAR-100 model in this folder"),
        untestable("resnet20_gains_nothing", "ResNet-20's INT8 engine is larger than its FP32 one (claim 9)",
                   "one model per folder (ResNet-20 is study 004's)"),
        untestable("small_models_degrade_faster", "large models compress with little loss, small ones degrade faster "
                   "(claim 10)", "one model per folder: compare folders"),
        untestable("future_work", "QAT, per-layer pruning, edge devices (claim 11)", "future work, not a result"),
    ]
    fp16_claim = "FP16 within 0.1 point of FP32 at every ratio (0.00 unpruned, -0.01 to +0.03 pruned; `ptq_resnet18_c10`, claim 6)"
    if cfg.runtime == "openvino":  # its FP16 IR stores FP16 weights but computes at f32: it cannot test FP16 arithmetic
        why = "the OpenVINO FP16 IR is compiled with f32 inference precision: only its stored weights are FP16"
        checks += [sanity("fp16_within_0_1_point_of_fp32", fp16_claim,
                          when(fp16, lambda: ((fp16.FP16 - fp16.FP32).abs() <= 0.1).all()), why),
                   untestable("fp16_faster_than_fp32", "FP16 faster than FP32 (0.25 against 0.61 ms; `ptq_resnet18_c10`, "
                              "claim 6)", why)]
    else:
        checks.append(claim("fp16_within_0_1_point_of_fp32", fp16_claim,
                            when(fp16, lambda: ((fp16.FP16 - fp16.FP32).abs() <= 0.1).all())))
        fast = "FP16 faster than FP32 (0.25 against 0.61 ms; `ptq_resnet18_c10`, claim 6)"
        checks.append(claim("fp16_faster_than_fp32", fast, when(fp16_speed, lambda: (fp16_speed.FP16 < fp16_speed.FP32).all()))
                      if cfg.runtime == "tensorrt" else
                      untestable("fp16_faster_than_fp32", fast, "the FP16 row runs in PyTorch, FP32 in ONNX Runtime"))
    return checks + amp_checks(frames)


def amp_checks(frames: dict[str, pd.DataFrame]) -> list[Check]:
    """AMP's accuracy within half a point of FP32's, and AMP faster (untestable where the table was not measured)."""
    acc_claim = "AMP fine-tuning within 0.5 point of FP32 (91.95 against 92.02%; `amp_vs_fp32_training`, claim 2)"
    speed_claim = "AMP fine-tuning faster than FP32 (3.9 against 3.6, unit not given; `amp_vs_fp32_training`, claim 2)"
    if AMP not in frames or "test_acc_pct ours" not in frames[AMP]:
        why = "no fp32_training / amp_training variants in this folder"
        return [untestable("amp_within_0_5_point_of_fp32", acc_claim, why),
                untestable("amp_training_faster_than_fp32", speed_claim, why)]
    amp = frames[AMP].set_index("training_precision")
    acc, speed = amp["test_acc_pct ours"], amp["speed_vs_fp32"]
    return [claim("amp_within_0_5_point_of_fp32", acc_claim, abs(acc["AMP"] - acc["FP32"]) <= 0.5),
            claim("amp_training_faster_than_fp32", speed_claim, speed["AMP"] > 1 if pd.notna(speed["AMP"]) else None)]


KEYS = {SWEEP: ["prune_pct"], PTQ: ["format"], COMBINED: ["prune_pct", "format"], "final_results": ["model"],
        "ptq_resnet18_c100": ["format"], "ptq_resnet20_c10": ["format"], "amp_vs_fp32_training": ["training_precision"],
        "tiny_imagenet_literature": ["model"]}


def plot_frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Accuracy against the pruning ratio (%): before / after fine-tuning and per format, ours and published."""
    sweep, comb = frames[SWEEP], pd.concat([frames[PTQ].assign(prune_pct=0), frames[COMBINED]])
    recs = [{"series": f"{what}{' (published)' if side == 'pub' else ''}", "x": int(r.prune_pct), "top1": r[col]}
            for what, base in (("before fine-tuning", "acc_before_ft_pct"), ("after fine-tuning", "acc_after_ft_pct"))
            for side in ("ours", "pub") for _, r in sweep.iterrows()
            for col in [f"{base} {side}"] if col in r and pd.notna(r[col])]
    recs += [{"series": f"{r.format}{' (published)' if side == 'pub' else ''}", "x": int(r.prune_pct),
              "top1": r[f"test_acc_pct {side}"]}
             for side in ("ours", "pub") for _, r in comb.iterrows()
             if f"test_acc_pct {side}" in r and pd.notna(r[f"test_acc_pct {side}"]) and r.prune_pct > 0]
    return pd.DataFrame(recs, columns=["series", "x", "top1"])


def figure(path: Path, plot: pd.DataFrame, frames: dict[str, pd.DataFrame]) -> None:
    from cnn_compress.report.figures import plt, save_figure

    fig, (acc, lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, group in plot.groupby("series", sort=False):
        acc.plot(group.x, group.top1, marker="o", linestyle="--" if "published" in label else "-", label=label,
                 linewidth=1, markersize=3)
    acc.set_xlabel("structured pruning ratio (%)")
    acc.set_ylabel("top-1 %")
    acc.legend(fontsize=6)
    comb = pd.concat([frames[PTQ].assign(prune_pct=0), frames[COMBINED]]).dropna(subset=["inference_ms_per_image ours"])
    sweep = frames[SWEEP].dropna(subset=["inference_ms_per_image ours"])
    lat.plot(sweep.prune_pct, sweep["inference_ms_per_image ours"], marker="o", label="eager FP32", linewidth=1)
    for fmt, group in comb.groupby("format"):
        lat.plot(group.prune_pct, group["inference_ms_per_image ours"], marker="s", label=fmt, linewidth=1)
    lat.set_xlabel("structured pruning ratio (%)")
    lat.set_ylabel("ms per image (batch 1, median)")
    lat.legend(fontsize=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)


def finding(frames: dict[str, pd.DataFrame], checks: list[Check], model: str = "") -> str:
    sweep = frames[SWEEP].dropna(subset=["acc_after_ft_pct ours"]).set_index("prune_pct")
    parts = []
    pruned = [p for p in sweep.index if p > 0]
    for pct in [p for p in (50, 70, 90) if p in pruned] or pruned[-3:]:
        if pct in sweep.index:
            r = sweep.loc[pct]
            pub = r.get("acc_after_ft_pct drop pub")
            parts.append(f"{pct}%: {r['acc_after_ft_pct drop ours']:.2f}"
                         + (f" (published {pub:.2f})" if pub is not None and pd.notna(pub) else ""))
    text = ("after fine-tuning, structured pruning costs " + ", ".join(parts) + " points") if parts else "no pruned rows"
    text = f"{model}: {text}" if model else text
    ptq = frames[PTQ].set_index("format")
    if {"FP32", "INT8"} <= set(ptq.index):
        f32, i8 = ptq.loc["FP32"], ptq.loc["INT8"]
        text += (f"; unpruned INT8 is {f32['inference_ms_per_image ours'] / i8['inference_ms_per_image ours']:.2f}x "
                 f"as fast as FP32 at {i8['test_acc_pct ours'] - f32['test_acc_pct ours']:+.2f} points")
    if AMP in frames and "test_acc_pct ours" in frames[AMP]:
        amp = frames[AMP].set_index("training_precision")
        text += (f"; {amp.amp['AMP']} fine-tuning ends {amp['test_acc_pct ours']['AMP'] - amp['test_acc_pct ours']['FP32']:+.2f}"
                 f" points from FP32 at {amp.speed_vs_fp32['AMP']:.2f}x its throughput")
    return text + f"; {count_line(checks)}."


def write(out: Path, cfg: Any, frames: dict[str, pd.DataFrame], checks: list[Check], machine: dict[str, Any],
          have_published: bool, model: str = "") -> None:
    atomic.write_text(out / "results.csv", long_frame(frames, lambda name, f: KEYS[name]).to_csv(index=False))
    plot = plot_frame(frames)
    atomic.write_text(out / "plots" / "study.csv", plot.to_csv(index=False))
    figure(out / "figures" / "accuracy_latency_vs_ratio.png", plot, frames)
    titles = {SWEEP: "Structured L1 pruning sweep, fine-tuned per ratio",
              PTQ: f"Post-training formats, unpruned ({cfg.runtime} for TensorRT)",
              COMBINED: "Pruning combined with the formats", "final_results": "Headline rows",
              AMP: "Fine-tuning with and without mixed precision (images/s: whole run, one process each)"}
    parts = [
        f"# structured-pruning-ptq-resnet18, scale `{cfg.scale}`\n", *scale_note(cfg),
        provenance("structured-pruning-ptq-resnet18", cfg, have_published)
        + f" Columns: `pub` published, `ours` measured here, `diff` ours - pub, `drop pub` / `drop ours` "
        "points below each side's own unpruned model (`diff` and drops for accuracies only). Sizes in MiB of the artifact's files, `ccz_MB` the true "
        f"compressed size; latency: batch 1, {cfg.threads} thread(s), median of {cfg.rounds} interleaved rounds "
        "(`ms ci95` its 95% interval). `epoch_time_s` is not measured here.\n",
        f"**Finding.** {finding(frames, checks, model)}\n",
        f"Measured on {machine_line(machine)}.\n",
    ]
    measured = [t for t in titles if t in frames and (t != AMP or "test_acc_pct ours" in frames[t])]
    for table_id in measured:
        ours = f", ours: {model}" if model else ""
        parts += [f"## {titles[table_id]} (`{table_id}`{ours})\n", markdown(frames[table_id], ".4g"), ""]
    parts.append("## Published tables this folder does not measure\n")
    for table_id, why in NOT_MEASURED.items():
        if table_id in frames and table_id not in measured:
            parts += [f"### `{table_id}`: {why}\n", markdown(frames[table_id], ".4g"), ""]
    parts += section(checks, "structured-pruning-ptq-resnet18")
    atomic.write_text(out / "results.md", "\n".join(parts))
