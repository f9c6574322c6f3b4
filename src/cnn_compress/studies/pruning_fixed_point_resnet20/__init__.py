"""pruning_fixed_point_resnet20 (studies/pruning-fixed-point-resnet20/): 80% unstructured pruning
(one-shot layer-wise, iterative layer-wise, global iterative) and 2-6 bit fixed point of a
pretrained ResNet-20, alone and combined, with and without fine-tuning; study 004 of
``shared/studies``.

The pipeline builds every row as an artifact of a variant; this module reads what each variant's
benchmark stage measured from its artifact (top-1, loss, sparsity), lays the rows beside the
published ones, checks the published claims on our rows (``shape_checks``, ``studies/checks.py``) and compares the fixed-point settings (which range estimator,
activations on or off, per-channel or per-tensor) by how close their drops come to the published
drops. Artifact names follow ``q<bits>_<asym|sym>_<setting>[_ft]``.

The closest setting is a choice, so it reads the ``select`` split when the data has one
(``data.select_fraction``; docs/selection-split.md) and every table reports ``report``: with
``setting: select`` the tables use the setting closest on ``select``, with a named setting they use
that one and the results say which setting ``select`` would have picked.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd

from cnn_compress.core.config import require
from cnn_compress.core.errors import ConfigError, UserError
from cnn_compress.quantize.config import FixedConfig, parse_format
from cnn_compress.studies.checks import (
    CHANCE_PCT,
    SAME_POINTS,
    Check,
    as_metrics,
    beyond,
    claim,
    model_label,
    untestable,
)
from cnn_compress.studies.registry import StudyContext, register_study

NAME = "pruning_fixed_point_resnet20"
PUBLISHED = "pruning-fixed-point-resnet20.yaml"
SELECT = "select"  # study.<name>.setting: choose the closest setting on the choosing split
METHODS = ("One-shot pruning + fine-tuning", "Iterative pruning + fine-tuning", "Global iterative pruning + fine-tuning")


def parse_settings(value: Any, key: str) -> tuple[tuple[str, FixedConfig], ...]:
    """``settings``: name -> fixed-point settings (``type: fixed`` implied), each validated."""
    require(isinstance(value, dict) and len(value) > 0, key, "must map setting names to fixed-point settings")
    out = []
    for name, raw in value.items():
        cfg = parse_format(str(name), {"type": "fixed", **(raw or {})}, f"{key}.{name}")
        require(isinstance(cfg, FixedConfig), f"{key}.{name}.type", "must be fixed")
        out.append((str(name), cfg))
    return tuple(out)


@dataclass(frozen=True)
class FixedPointStudyConfig:
    SECTION: ClassVar[str] = f"study.{NAME}"
    COERCE: ClassVar[dict[str, Any]] = {"settings": parse_settings}
    scale: Literal["smoke", "cpu", "paper"] = "smoke"
    dense: str = "dense"  # the model as trained: the FP baseline and the no-fine-tune quantization rows
    dense_ft: str = "dense_ft"  # its fine-tuned quantization rows (``..._ft`` artifacts)
    pruned: tuple[str, ...] = ("oneshot", "iterative", "global")  # the three pruning rows, in METHODS order
    combined: str = "global"  # the pruned variant whose fixed-point artifacts are the combined table
    # the setting the published tables are compared with: one of settings, or "select" for the one whose
    # drops come closest to the published ones on the `select` split (the choosing split)
    setting: str = "w_minmax"
    settings: tuple[tuple[str, FixedConfig], ...] = ()  # every setting compared in the ablation
    bits: tuple[int, ...] = (6, 5, 4, 3, 2)
    close_ratio: float = 1.5  # a drop counts as close when within this factor of the published one...
    close_points: float = 0.5  # ... or within this many points (below it, test-set noise decides)
    # the distillation table (ours, issue 17): variants that repeat dense_ft / combined with the same
    # epochs but finetune.distill on ("" = not built)
    dense_kd: str = ""
    combined_kd: str = ""
    # the sensitivity-allocation table (ours, issue 17): a variant that repeats pruned[0] (one-shot, the
    # same ratio in every layer) with prune.allocation: sensitivity, and the mean widths at which the
    # dense variant builds q<b>_asym_<setting>_mixed (per-layer widths, mean <= b) beside q<b>_asym_<setting>
    allocation_pruned: str = ""
    mixed_bits: tuple[int, ...] = ()
    # the training-precision table (ours, issue 17): variants fine-tuned alike but for finetune.amp, the
    # first in FP32 (its throughput is the reference)
    amp_variants: tuple[str, ...] = ()
    # ... and their training steps timed against each other in this process, interleaved over amp_rounds
    # rounds of one batch of amp_batch images (0 = only the fine-tuning runs' own throughputs)
    amp_rounds: int = 7
    amp_batch: int = 64
    amp_threads: int = 2

    def __post_init__(self) -> None:
        require(len(self.pruned) == len(METHODS), f"{self.SECTION}.pruned", f"must name {len(METHODS)} variants")
        require(any(n == self.setting for n, _ in self.settings) or not self.settings or self.setting == SELECT,
                f"{self.SECTION}.setting", f"'{self.setting}' is not one of settings (or '{SELECT}')")
        require(self.setting != SELECT or len(self.settings) > 0, f"{self.SECTION}.setting",
                f"'{SELECT}' needs settings to choose from")
        require(self.close_ratio >= 1, f"{self.SECTION}.close_ratio", "must be >= 1")
        require(self.amp_rounds >= 0, f"{self.SECTION}.amp_rounds", "must be >= 0")
        require(self.amp_batch >= 2, f"{self.SECTION}.amp_batch", "must be >= 2 (BatchNorm trains on batches)")
        require(self.amp_threads >= 1, f"{self.SECTION}.amp_threads", "must be >= 1")


def artifact(setting: str, bits: int, scheme: str, ft: bool = False) -> str:
    return f"q{bits}_{'asym' if scheme == 'asymmetric' else 'sym'}_{setting}" + ("_ft" if ft else "")


class Rows:
    """Every variant's measured artifacts: (variant, artifact) -> top-1 %, loss, sparsity."""

    def __init__(self, variants: list[str], rows: dict[str, dict[str, Any]] | None = None) -> None:
        self.rows: dict[str, dict[str, Any]] = {} if rows is None else rows
        for v in variants if rows is None else ():
            try:
                self.rows[v] = json.loads(Path("variants", v, "benchmark.json").read_text())["artifacts"]
            except (OSError, ValueError, KeyError) as exc:
                raise UserError(f"study: variant {v} has no benchmark results ({exc})") from None

    def get(self, variant: str, name: str, key: str = "top1") -> float | None:
        row = self.rows.get(variant, {}).get(name)
        return None if row is None or row.get(key) is None else float(row[key])

    def splits(self) -> tuple[str, str]:
        """(choosing split, reported split): ``select`` / ``report`` when the benchmark stage scored
        both (``top1_select`` beside ``top1``), else the one split it scored for both."""
        rows = [r for arts in self.rows.values() for r in arts.values()]
        shown = str(rows[0].get("split", "test")) if rows else "test"
        return ("select" if rows and all("top1_select" in r for r in rows) else shown), shown

    def choosing(self) -> Rows:
        """These rows as the choosing split sees them: ``top1`` is ``top1_select`` where it was scored."""
        return Rows([], {v: {n: r | ({"top1": r["top1_select"]} if "top1_select" in r else {}) for n, r in arts.items()}
                         for v, arts in self.rows.items()})

    def need(self, variant: str, name: str, key: str = "top1") -> float:
        value = self.get(variant, name, key)
        if value is None:
            raise ConfigError(f"study.{NAME}: variant '{variant}' builds no artifact '{name}' "
                              "(its quantize.formats must list it)")
        return value


def pct(published: float | None) -> float | None:
    """Published accuracies are fractions; tables here are in percent."""
    return None if published is None or pd.isna(published) else round(100.0 * published, 2)


def compare(ours: pd.DataFrame, pub: pd.DataFrame | None, key: str, measures: dict[str, str | None],
            base: float, pub_base: float | None) -> pd.DataFrame:
    """Ours beside published, per measure: ``<m> pub``, ``<m> ours``, ``<m> diff`` and, for accuracies,
    the drop from each side's own baseline (``<m> drop pub`` / ``<m> drop ours``). ``measures`` maps
    our column to the published column (None: not published)."""
    frame = ours.copy()
    if pub is not None:
        renamed = {src: f"{m} pub" for m, src in measures.items() if src is not None}
        frame = frame.merge(pub[[key, *renamed]].rename(columns=renamed), on=key, how="left")
    cols = [key] + [c for c in ours.columns if c != key and c not in measures]
    for m in measures:
        is_acc = m != "loss"
        if pub is not None and measures[m] is not None:
            if is_acc:
                frame[f"{m} pub"] = frame[f"{m} pub"].map(pct)
            frame[f"{m} diff"] = (frame[m] - frame[f"{m} pub"]).round(2 if is_acc else 4)
        frame[f"{m} ours"] = frame.pop(m)
        cols += [c for c in (f"{m} pub", f"{m} ours", f"{m} diff") if c in frame]
        if is_acc:
            frame[f"{m} drop ours"] = (base - frame[f"{m} ours"]).round(2)
            if pub_base is not None and f"{m} pub" in frame:
                frame[f"{m} drop pub"] = (pub_base - frame[f"{m} pub"]).round(2)
            cols += [c for c in (f"{m} drop pub", f"{m} drop ours") if c in frame]
    return frame[cols]


def pruning_table(rows: Rows, cfg: FixedPointStudyConfig, pub: pd.DataFrame | None, base: float,
                  pub_base: float | None) -> pd.DataFrame:
    recs = [{"method": m, "variant": v, "sparsity %": round(rows.need(v, "finetuned", "sparsity"), 1),
             "acc before ft": rows.get(v, "pruned") if v != cfg.dense else None,
             "acc": rows.need(v, "finetuned"), "loss": rows.need(v, "finetuned", "loss")}
            for m, v in zip(("Floating-point baseline", *METHODS), (cfg.dense, *cfg.pruned), strict=True)]
    return compare(pd.DataFrame(recs), pub, "method", {"acc": "test_acc", "loss": "test_loss"}, base, pub_base)


def quant_table(rows: Rows, cfg: FixedPointStudyConfig, pub: pd.DataFrame | None, base: float,
                pub_base: float | None) -> pd.DataFrame:
    """Bits x scheme without fine-tuning, for the study's setting."""
    recs = [{"nbits": b, "asym": rows.get(cfg.dense, artifact(cfg.setting, b, "asymmetric")),
             "sym": rows.get(cfg.dense, artifact(cfg.setting, b, "symmetric"))} for b in cfg.bits]
    return compare(pd.DataFrame(recs), pub, "nbits", {"asym": "asymmetric_acc", "sym": "symmetric_acc"}, base,
                   pub_base)


def ft_table(rows: Rows, cfg: FixedPointStudyConfig, pub: pd.DataFrame | None, base: float,
             pub_base: float | None) -> pd.DataFrame:
    recs = [{"nbits": b, "asym ft": rows.need(cfg.dense_ft, artifact(cfg.setting, b, "asymmetric", ft=True))}
            for b in cfg.bits if b <= 5]
    return compare(pd.DataFrame(recs), pub, "nbits", {"asym ft": "acc_after_ft"}, base, pub_base)


def combined_table(rows: Rows, cfg: FixedPointStudyConfig, pub: pd.DataFrame | None, base: float,
                   pub_base: float | None) -> pd.DataFrame:
    v = cfg.combined
    recs = [{"nbits": b, "before ft": rows.need(v, artifact(cfg.setting, b, "asymmetric")),
             "after ft": rows.need(v, artifact(cfg.setting, b, "asymmetric", ft=True))} for b in cfg.bits if b <= 5]
    return compare(pd.DataFrame(recs), pub, "nbits", {"before ft": "acc_before_ft", "after ft": "acc_after_ft"}, base,
                   pub_base)


def published_base(study: dict[str, Any] | None) -> float | None:
    from cnn_compress.studies.common import published_table

    table = published_table(study, "pruning_finetune")
    return None if table is None else pct(float(table.test_acc.iloc[0]))


def ablation(rows: Rows, cfg: FixedPointStudyConfig, pub: pd.DataFrame | None, base: float,
             pub_base: float | None) -> pd.DataFrame:
    """Per setting: the no-fine-tune drops at every bit width and scheme, and how close they come
    to the published drops at 4-6 bits (the worst factor between ours and the published drop)."""
    recs = []
    if pub is not None and pub_base is not None:
        rec: dict[str, Any] = {"setting": "published", "what": "the study's own drops"}
        for b in cfg.bits:
            for scheme in ("asymmetric", "symmetric"):
                rec[f"{scheme[:3]}{b}"] = round(pub_base - pct(float(pub.loc[pub.nbits == b, f"{scheme}_acc"].iloc[0])), 2)
        recs.append(rec)
    for name, fixed in cfg.settings:
        what = [part for part in fixed.describe().split(", ")[1:] if not part.startswith("layers ")]
        rec = {"setting": name, "what": ", ".join(what)}
        worst, close, by_points = 0.0, True, 0
        for b in cfg.bits:
            for scheme in ("asymmetric", "symmetric"):
                ours = rows.get(cfg.dense, artifact(name, b, scheme))
                drop = None if ours is None else round(base - ours, 2)
                rec[f"{scheme[:3]}{b}"] = drop
                if not recs or recs[0]["setting"] != "published" or drop is None or b < 4:
                    continue
                pdrop = recs[0][f"{scheme[:3]}{b}"]
                ratio = max(drop, 0.01) / max(pdrop, 0.01)
                worst = max(worst, ratio, 1.0 / ratio)
                within_ratio = 1 / cfg.close_ratio <= ratio <= cfg.close_ratio
                close &= abs(drop - pdrop) <= cfg.close_points or within_ratio
                by_points += not within_ratio and abs(drop - pdrop) <= cfg.close_points
        has_pub = bool(recs) and recs[0]["setting"] == "published"
        rec["worst factor 4-6 bits"] = round(worst, 2) if has_pub else None
        # a pair within close_points is close whatever its factor (0.12 vs 0.07 points is 7x): say how many
        verdict = ("yes" if close else "no") + (f", {by_points} within {cfg.close_points:g} pts" if close and by_points else "")
        rec["close 4-6 bits"] = verdict if has_pub else None
        recs.append(rec)
    return pd.DataFrame(recs)


def shape_checks(tables: dict[str, pd.DataFrame], base: float, combined: str = "global") -> list[Check]:
    """Study 004's published claims on our rows (rows not built make a claim untestable); ``base`` is our FP
    top-1, ``combined`` the pruned variant whose fixed-point artifacts are the combined table."""
    prune = tables["pruning_finetune"].set_index("method")["acc ours"]
    q = tables["quant_no_finetune"].set_index("nbits")
    ft, comb = tables["asym_quant_finetune"].set_index("nbits"), tables["pruned_then_quantized"].set_index("nbits")
    pruned_fp = tables["pruning_finetune"].set_index("variant")["acc ours"].get(combined)

    def rows(frame: pd.DataFrame, bits: list[int], cols: list[str]) -> pd.DataFrame:
        return frame.loc[[b for b in bits if b in frame.index], cols].dropna()

    def when(frame: pd.DataFrame, test: Any) -> bool | None:
        return bool(test(frame)) if len(frame) else None

    ab = ["asym ours", "sym ours"]
    merged = ft[["asym ft ours"]].join(q[["asym ours"]], how="inner").dropna()
    two = rows(comb, [2], ["before ft ours", "after ft ours"])
    four = rows(comb, [4], ["after ft ours"])
    return [
        untestable("baseline_figures", "pretrained ResNet-20: 0.9151 test accuracy (`pruning_finetune`, claim 1)",
                   "absolute figures of one model: shown beside ours in the tables (`diff`), not a shape"),
        claim("global_iterative_pruning_best", "at 80% sparsity, global iterative pruning ends the most accurate (0.8841 "
              "against 0.8794 one-shot, 0.8769 iterative; `pruning_finetune`, claims 2, 7)",
              prune[METHODS[2]] > max(prune[METHODS[0]], prune[METHODS[1]])),
        claim("five_six_bits_within_0_8_points", "without fine-tuning, 6 and 5 bits stay within 0.8 points of FP, both "
              "schemes (`quant_no_finetune`, claim 3)", when(rows(q, [6, 5], ab), lambda r: ((base - r).round(2) <= 0.8).all().all())),
        claim("asym_above_sym_at_4_and_3_bits", f"asymmetric above symmetric by more than {SAME_POINTS:g} point at 4 "
              "and 3 bits (0.8973 / 0.8532, 0.7660 / 0.7151; `quant_no_finetune`, claims 3, 7)",
              when(rows(q, [4, 3], ab), lambda r: beyond(r["asym ours"], r["sym ours"]).all())),
        claim("collapse_at_2_bits_without_ft", f"2 bits without fine-tuning collapse to chance, at most {CHANCE_PCT:g}% "
              "(0.0899 / 0.1000; `quant_no_finetune`, claim 3)",
              when(rows(q, [2], ab), lambda r: (r.max(axis=1) <= CHANCE_PCT).all())),
        claim("ft_recovers_at_every_width", "fine-tuning lifts asymmetric fixed point at every width "
              "(`asym_quant_finetune`, claims 4, 7)", when(merged, lambda r: (r["asym ft ours"] >= r["asym ours"]).all())),
        claim("ft_3_to_5_bits_within_1_point", "fine-tuned asymmetric 5, 4 and 3 bits end within 1 point of FP (0.9156, "
              "0.9140, 0.9058; `asym_quant_finetune`, claim 4)",
              when(rows(ft, [5, 4, 3], ["asym ft ours"]), lambda r: ((base - r["asym ft ours"]).round(2) <= 1.0).all())),
        claim("ft_lifts_2_bits_by_30_points", "fine-tuning lifts 2 bits out of the collapse, by 30 points or more "
              "(0.0899 -> 0.8597; `asym_quant_finetune`, claim 4)",
              when(merged.loc[[b for b in [2] if b in merged.index]],
                   lambda r: (r["asym ft ours"] - r["asym ours"] >= 30).all())),
        claim("combined_ft_recovers", "fine-tuning lifts the 80%-sparse quantized model at every width "
              "(`pruned_then_quantized`, claim 5)",
              when(comb[["before ft ours", "after ft ours"]].dropna(), lambda r: (r["after ft ours"] >= r["before ft ours"]).all())),
        claim("combined_2_bits_collapse", f"80% sparse + 2 bits is at chance before fine-tuning (at most {CHANCE_PCT:g}%) "
              "and under half the FP accuracy after it (0.1000 -> 0.3348; `pruned_then_quantized`, claim 5)",
              when(two, lambda r: ((r["before ft ours"] <= CHANCE_PCT) & (r["after ft ours"] < base / 2)).all())),
        claim("combined_4_bits_above_pruned_fp", f"80% sparse + 4 bits, fine-tuned, ends more than {SAME_POINTS:g} "
              "point above the 80%-sparse FP model (0.8994 against 0.8841; `pruned_then_quantized`, `pruning_finetune`, claim 6)",
              when(four, lambda r: beyond(r["after ft ours"], pruned_fp).all()) if pruned_fp is not None else None),
    ]


@dataclass(frozen=True)
class SettingChoice:
    """Which fixed-point setting the tables use and how it was decided: ``closest`` is the setting
    whose drops come closest to the published ones on ``split`` (the choosing split), ``reported``
    the split every table's accuracy is from, ``fixed`` whether params named the setting."""
    setting: str
    closest: str | None
    split: str
    reported: str
    fixed: bool
    worst: dict[str, float | None]  # setting -> worst factor 4-6 bits on the choosing split
    close: dict[str, str | None]  # setting -> close 4-6 bits on the choosing split

    @property
    def separate(self) -> bool:
        return self.split != self.reported


def choose_setting(rows: Rows, cfg: FixedPointStudyConfig, pub: pd.DataFrame | None,
                   pub_base: float | None) -> SettingChoice:
    """The closest setting, judged on the choosing split only: the drops of every setting from the
    dense model's accuracy, both read from ``top1_select`` when the benchmark stage scored it, so no
    ``report`` image can move the choice (``setting: select`` then uses it)."""
    split, reported = rows.splits()
    seen = rows.choosing()
    frame = ablation(seen, cfg, pub, seen.need(cfg.dense, "finetuned"), pub_base)
    ranked = frame[frame.setting != "published"].dropna(subset=["worst factor 4-6 bits"])
    closest = str(ranked.sort_values("worst factor 4-6 bits", kind="stable").setting.iloc[0]) if len(ranked) else None
    if cfg.setting == SELECT and closest is None:
        raise ConfigError(f"study.{NAME}.setting: '{SELECT}' found no setting with drops at 4-6 bits beside published "
                          "ones to choose by (needs ../shared and the dense variant's q<4-6>_* artifacts)")
    setting = closest if cfg.setting == SELECT else cfg.setting
    by = frame.set_index("setting")
    return SettingChoice(str(setting), closest, split, reported, cfg.setting != SELECT,
                         {n: _num(by.loc[n, "worst factor 4-6 bits"]) for n, _ in cfg.settings if n in by.index},
                         {n: by.loc[n, "close 4-6 bits"] for n, _ in cfg.settings if n in by.index})


def with_choice_columns(frame: pd.DataFrame, choice: SettingChoice) -> pd.DataFrame:
    """The ablation on the reported split, with the choosing split's verdicts beside it (when the two
    splits differ) and the setting in use marked."""
    frame = frame.copy()
    if choice.separate:
        frame[f"worst factor 4-6 bits, {choice.split}"] = frame.setting.map(choice.worst)
        frame[f"close 4-6 bits, {choice.split}"] = frame.setting.map(choice.close)
    frame["in use"] = (frame.setting == choice.setting).map({True: "yes", False: ""})
    return frame


@register_study(NAME, FixedPointStudyConfig)
def run(cfg: FixedPointStudyConfig, ctx: StudyContext) -> dict[str, Any]:
    from cnn_compress.measure.benchmark import machine_info
    from cnn_compress.studies.common import published, published_table
    from cnn_compress.studies.pruning_fixed_point_resnet20 import report

    for v in (cfg.dense, cfg.dense_ft, cfg.combined, *cfg.pruned,
              *filter(None, (cfg.dense_kd, cfg.combined_kd, cfg.allocation_pruned)), *cfg.amp_variants):
        if v not in ctx.variants:
            raise ConfigError(f"study.{NAME}: '{v}' is not a variant of this study folder")
    rows, study = Rows(ctx.variants), published(PUBLISHED)
    base, pub_base = rows.need(cfg.dense, "finetuned"), published_base(study)
    quant_pub = published_table(study, "quant_no_finetune")
    choice = choose_setting(rows, cfg, quant_pub, pub_base)
    cfg = replace(cfg, setting=choice.setting)  # every table below is of the setting in use
    tables = {
        "pruning_finetune": pruning_table(rows, cfg, published_table(study, "pruning_finetune"), base, pub_base),
        "quant_no_finetune": quant_table(rows, cfg, quant_pub, base, pub_base),
        "asym_quant_finetune": ft_table(rows, cfg, published_table(study, "asym_quant_finetune"), base, pub_base),
        "pruned_then_quantized": combined_table(rows, cfg, published_table(study, "pruned_then_quantized"), base,
                                                pub_base),
        "ablation": with_choice_columns(ablation(rows, cfg, quant_pub, base, pub_base), choice),
    }
    if cfg.dense_kd or cfg.combined_kd:
        tables["distillation"] = distill_table(rows, cfg, base)
    if cfg.allocation_pruned or cfg.mixed_bits:
        tables["allocation"] = allocation_table(rows, cfg, base)
    if cfg.amp_variants:
        tables["amp"] = amp_table(cfg)
    checks = shape_checks(tables, base, cfg.combined)
    report.write(ctx.out, cfg, tables, checks, base, pub_base, machine_info(1), study is not None,
                 model_label(ctx.params, "ResNet-20"), choice)
    prune = tables["pruning_finetune"].set_index("variant")
    q = tables["quant_no_finetune"].set_index("nbits")
    return {"baseline_top1": base, "setting": choice.setting, "choice_split": choice.split,
            "report_split": choice.reported, **{f"{v}_drop": float(prune.loc[v, "acc drop ours"]) for v in cfg.pruned},
            **{f"q{b}_asym_drop": _num(q.loc[b, "asym drop ours"]) for b in cfg.bits},
            **{f"q{b}_sym_drop": _num(q.loc[b, "sym drop ours"]) for b in cfg.bits},
            **as_metrics(checks), "closest_setting": choice.closest,
            "setting_is_closest": choice.closest in (None, choice.setting),
            **({f"kd_gain_{r.key}": _num(r.gain) for r in tables["distillation"].itertuples()}
               if "distillation" in tables else {}),
            **({f"allocation_gain_{r.key}": _num(r.gain) for r in tables["allocation"].itertuples()}
               if "allocation" in tables else {}),
            **({f"amp_{r.amp}_speed_vs_fp32": _num(r.speed_vs_first) for r in tables["amp"].itertuples()}
               if "amp" in tables else {}),
            **({f"amp_{r.amp}_same_run_vs_fp32": _num(r.same_run_vs_first) for r in tables["amp"].itertuples()}
               if "amp" in tables and "same_run_vs_first" in tables["amp"] else {})}


def distill_table(rows: Rows, cfg: FixedPointStudyConfig, base: float) -> pd.DataFrame:
    """Plain fine-tuning against fine-tuning that also learns from the unpruned model, same epochs."""
    cases = []
    if cfg.dense_kd:
        cases += [(f"q{b}_asym", f"{b}-bit asymmetric, fine-tuned", cfg.dense_ft, cfg.dense_kd,
                   artifact(cfg.setting, b, "asymmetric", ft=True)) for b in (3, 2)]
    if cfg.combined_kd:
        cases += [("sparse80", "80% sparse, fine-tuned", cfg.combined, cfg.combined_kd, "finetuned"),
                  ("sparse80_q4_asym", "80% sparse + 4-bit asymmetric, fine-tuned", cfg.combined, cfg.combined_kd,
                   artifact(cfg.setting, 4, "asymmetric", ft=True))]
    recs = []
    for key, what, plain, kd, name in cases:
        a, b = rows.need(plain, name), rows.need(kd, name)
        recs.append({"key": key, "model": what, "artifact": name, "plain": a, "distilled": b,
                     "gain": round(b - a, 2), "plain drop": round(base - a, 2), "distilled drop": round(base - b, 2)})
    return pd.DataFrame(recs)


def mean_bits(variant: str, name: str) -> float | None:
    """The weight-weighted mean width the quantize stage recorded for an artifact."""
    try:
        return json.loads(Path("variants", variant, "quantized", "manifest.json").read_text())[name].get("mean_bits")
    except (OSError, ValueError, KeyError):
        return None


def allocation_table(rows: Rows, cfg: FixedPointStudyConfig, base: float) -> pd.DataFrame:
    """Uniform against sensitivity-allocated compression at the same budget: the same global sparsity
    and fine-tuning for pruning, the same mean bits per weight (no fine-tuning) for fixed point."""
    recs = []

    def add(key: str, what: str, budget: str, uniform: float, allocated: float) -> None:
        recs.append({"key": key, "model": what, "budget": budget, "uniform": uniform, "sensitivity": allocated,
                     "gain": round(allocated - uniform, 2), "uniform drop": round(base - uniform, 2),
                     "sensitivity drop": round(base - allocated, 2)})

    if cfg.allocation_pruned:
        uniform, allocated = cfg.pruned[0], cfg.allocation_pruned
        sparsity = rows.need(allocated, "finetuned", "sparsity")
        for name, what in (("pruned", "pruned, before fine-tuning"), ("finetuned", "pruned, fine-tuned")):
            if rows.get(uniform, name) is not None and rows.get(allocated, name) is not None:
                add(f"sparse_{name}", what, f"{sparsity:.1f}% sparse", rows.need(uniform, name),
                    rows.need(allocated, name))
    for b in cfg.mixed_bits:
        plain = artifact(cfg.setting, b, "asymmetric")
        mixed = f"{plain}_mixed"
        got = mean_bits(cfg.dense, mixed)
        add(f"q{b}_asym", f"{cfg.setting}, asymmetric, no fine-tuning",
            f"mean {got:.2f} bits" if got is not None else f"mean <= {b} bits",
            rows.need(cfg.dense, plain), rows.need(cfg.dense, mixed))
    return pd.DataFrame(recs)


def amp_table(cfg: FixedPointStudyConfig) -> pd.DataFrame:
    """The same fine-tuning in FP32 and under autocast: accuracy; training throughput over each whole
    run (one process each, so a ratio between runs rather than a benchmark); and, with ``amp_rounds``,
    the precisions' training steps timed against each other in this process (``precision.py``)."""
    from cnn_compress.models.checkpoint import load_checkpoint
    from cnn_compress.studies.common import read_training
    from cnn_compress.studies.pruning_fixed_point_resnet20.precision import interleaved_throughput, summarize

    variants = cfg.amp_variants
    runs = {v: read_training(v) for v in variants}
    first = runs[variants[0]].get("train_images_per_s")
    recs = [{"variant": v, "amp": r.get("amp", "off"), "top1": r["top1"], "images_per_s": r.get("train_images_per_s"),
             "speed_vs_first": round(r["train_images_per_s"] / first, 3) if first and r.get("train_images_per_s")
             else None, "drop vs first": round(runs[variants[0]]["top1"] - r["top1"], 2)} for v, r in runs.items()]
    if cfg.amp_rounds:
        modes = list(dict.fromkeys(rec["amp"] for rec in recs))
        model = load_checkpoint(Path("variants", variants[0], "pruned.pt"))  # what every fine-tuning started from
        same = summarize(interleaved_throughput(model, modes, cfg.amp_batch, cfg.amp_rounds,
                                                threads=cfg.amp_threads), modes[0])
        for rec in recs:
            s = same[rec["amp"]]
            rec |= {"same_run_images_per_s": s["images_per_s"], "same_run_vs_first": s["ratio"],
                    "same_run_interval": f"{s['ratio_lo']:.3f}-{s['ratio_hi']:.3f}"}
    return pd.DataFrame(recs)


def _num(value: Any) -> float | None:
    return None if pd.isna(value) else float(value)
