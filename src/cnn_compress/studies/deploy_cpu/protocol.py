"""The deploy study's review protocol (issue 31): choices read the ``select`` split and reported
accuracies the ``report`` split; the dense reference gets at least the fine-tuning budget of what it
is compared with; the OpenVINO anchor and the winner are timed again by OpenVINO's own
``benchmark_app`` and must agree with the harness within a tolerance."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnn_compress.core.config import load_resolved
from cnn_compress.data.dataset import choice_split, report_split
from cnn_compress.prune.config import PruneConfig
from cnn_compress.train.config import FinetuneConfig

# ---------------------------------------------------------------- the selection split


@dataclass(frozen=True)
class Splits:
    """Which split decides (``choose``) and which one every shown accuracy reads (``report``)."""

    choose: str
    report: str
    n_choose: int
    n_report: int

    @property
    def separate(self) -> bool:
        return self.choose != self.report

    def sentence(self) -> str:
        """results.md's line on what decided what."""
        if self.separate:
            return (f"Choices (the fastest, smallest and highest-throughput artifacts within the budget, the "
                    f"profiled artifact, the cross-checked winner) made on `{self.choose}` ({self.n_choose:,} images); "
                    f"accuracies and drops shown on `{self.report}` ({self.n_report:,} images), a part of the test "
                    "split no choice read.")
        return (f"**Warning: choices and reported accuracies read the same split** (`{self.report}`, "
                f"{self.n_report:,} images): the prepared data has no selection split, so the artifacts chosen "
                "within the budget are scored on the images that chose them and their accuracy is biased upward. "
                "Set `data.select_fraction: 0.5` to choose on `select` and report on `report`.")


def splits_of(ds: Any) -> Splits:
    choose, report = choice_split(ds, "test"), report_split(ds)
    return Splits(choose, report, len(ds.splits[choose]), len(ds.splits[report]))


def split_accuracies(paths: list[Path], ds: Any, splits: Splits, threads: int,
                     batch_size: int = 256) -> dict[Path, tuple[float, float]]:
    """Top-1 of each artifact on the choosing and on the reporting split, evaluated here (the
    benchmark stage scores one split only)."""
    from cnn_compress.data.evaluation import predict_logits, score
    from cnn_compress.runtimes.runners import load_runner

    data = {name: ds.split(name) for name in (splits.choose, splits.report)}
    out = {}
    for path in dict.fromkeys(paths):
        predict = load_runner(path, threads).predict
        top1 = {name: score(predict_logits(predict, x, ds.mean, ds.std, batch_size), y)["top1"]
                for name, (x, y) in data.items()}
        out[path] = (top1[splits.choose], top1[splits.report])
    return out


# ---------------------------------------------------------------- equal-budget reference

RECIPE = ("lr", "batch_size", "weight_decay", "momentum", "label_smoothing", "crop_pad", "flip", "cutout")


@dataclass(frozen=True)
class Budget:
    """What fine-tuning one variant got: epochs (iterative pruning's step epochs included),
    optimizer steps, the recipe that shapes them, and the distillation weight (not compared)."""

    epochs: int
    steps: int
    recipe: dict[str, Any]
    distill: float = 0.0

    def describe(self) -> str:
        return f"{self.epochs} epoch{'' if self.epochs == 1 else 's'} ({self.steps:,} steps)"


def training_budget(finetune: FinetuneConfig, prune: PruneConfig, train_images: int,
                    record: dict[str, Any] | None = None) -> Budget:
    """A variant's budget from its resolved configs; ``record`` (its finetune stage's output) gives
    the epochs and lr ``finetune.by_ratio`` picked, else they are picked here from the prune ratio."""
    if record and "epochs" in record:
        finetune = dataclasses.replace(finetune, epochs=int(record["epochs"]), lr=float(record.get("lr", finetune.lr)))
    else:
        finetune = finetune.for_ratio(prune.ratio)
    per_epoch = math.ceil(train_images / finetune.batch_size)
    per_epoch = min(per_epoch, finetune.steps_per_epoch) if finetune.steps_per_epoch else per_epoch
    step_epochs = sum(p.steps * p.step_epochs for p in prune.passes() if p.schedule == "iterative")
    epochs = finetune.epochs + step_epochs
    return Budget(epochs, epochs * per_epoch, {k: getattr(finetune, k) for k in RECIPE}, finetune.distill.weight)


def read_budgets(variants: list[str], train_images: int, root: Path = Path(".")) -> dict[str, Budget]:
    """Every variant's budget from configs/<v>/{finetune,prune}.json and variants/<v>/finetune.json."""
    budgets = {}
    for v in variants:
        (finetune,) = load_resolved(root / "configs" / v / "finetune.json", FinetuneConfig)
        (prune,) = load_resolved(root / "configs" / v / "prune.json", PruneConfig)  # step_epochs
        try:
            record = json.loads((root / "variants" / v / "finetune.json").read_text())
        except (OSError, ValueError):
            record = None
        budgets[v] = training_budget(finetune, prune, train_images, record)
    return budgets


def budget_check(budgets: dict[str, Budget], dense: str) -> list[str]:
    """The lines results.md shows when the reference got less fine-tuning than a variant it is
    compared with (under-trained), or a different recipe; none when it is an equal-budget reference."""
    ref = budgets[dense]
    others = {v: b for v, b in budgets.items() if v != dense}
    lines = []
    more = {v: b for v, b in others.items() if b.steps > ref.steps}
    if more:
        lines.append(f"reference under-trained: {dense} {ref.describe()} against "
                     + ", ".join(f"{b.describe()} for {v}" for v, b in sorted(more.items(), key=lambda kv: -kv[1].steps)))
    if ref.steps:  # a recipe that never ran (0 epochs) is not compared
        for v, b in sorted(others.items()):
            diff = [f"{k} {ref.recipe[k]} against {b.recipe[k]}" for k in RECIPE
                    if b.steps and ref.recipe.get(k) != b.recipe.get(k)]
            if diff:
                lines.append(f"reference fine-tuned differently from {v}: " + ", ".join(diff))
    return lines


# ---------------------------------------------------------------- benchmark_app cross-check

TOLERANCE_PCT = 15.0


def agreement(harness: float, reference: float, tolerance: float = TOLERANCE_PCT) -> tuple[float, bool]:
    """How far the harness's figure is from benchmark_app's, in percent of benchmark_app's, and
    whether that is within ``tolerance``."""
    pct = 100.0 * (harness / reference - 1.0) if reference > 0 else math.inf
    return round(pct, 1), abs(pct) <= tolerance


def verdict(pct: float, agree: bool) -> str:
    return "agree" if agree else f"disagree: {pct:+.1f}%"


def cross_check_keys(keys: set[str], dense: str, winner: str | None,
                     fastest: str | None = None) -> dict[str, str]:
    """role -> cell key: the dense OpenVINO INT8 anchor, the winner and the fastest artifact at any
    accuracy (each when it is an IR, else its variant's OpenVINO INT8 IR when it has one; ``keys``:
    the IR cells, not compiled). The fastest is checked too because when the winner is the anchor
    itself no pruned artifact would be, while the speedups outside the budget are still reported."""
    out = {"dense anchor": f"{dense}/openvino_int8"} if f"{dense}/openvino_int8" in keys else {}
    for role, key in (("winner", winner), ("fastest at any accuracy", fastest)):
        if key is None:
            continue
        ir = key if key in keys else f"{key.split('/')[0]}/openvino_int8"
        if ir in keys and ir not in out.values():
            out[role if ir == key else f"{role}'s variant (`{key}` is no IR)"] = ir
    return out


def loop_ms(path: Path, batch: int, threads: int, seconds: float) -> float:
    """Median ms of back-to-back calls of the harness's own OpenVINO runner (``StaticShapes``: the IR
    reshaped static, compiled by ``compile_cpu``, a torch batch in and logits out) on one IR: the
    harness's method at the moment of the cross-check, to bracket ``benchmark_app`` in time."""
    import time

    import torch

    from cnn_compress.runtimes.ov_runtime import StaticShapes, read

    predict = StaticShapes(path, threads)
    shape = [batch, *[d.get_length() for d in read(path).input(0).get_partial_shape()[1:]]]
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    for _ in range(20):
        predict(x)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        start = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def cause(harness: float, loop_now: float, app: float) -> str:
    """Why the harness and benchmark_app disagree, from the loop timed just before and after
    benchmark_app: agreeing with it, the speed moved since the harness's rounds (a moment); not
    agreeing, the two timers measure differently (a method)."""
    moment, _ = agreement(harness, loop_now)
    method, same = agreement(loop_now, app)
    if same:
        return f"moment: a loop around benchmark_app agrees with it ({method:+.1f}%); the rounds were {moment:+.1f}% off it"
    return f"method: a loop around benchmark_app disagrees with it too ({method:+.1f}%)"


def _figure(batch: int, ms: float) -> float:
    """The cross-check's figure from a median: ms itself at the smallest batch (``batch`` 0), images/s above."""
    return ms if batch == 0 else 1000.0 * batch / ms


def cross_check(cells: dict[str, tuple[Path, str]], timings: dict[int, dict[str, dict[int, list[float]]]],
                batch_sizes: tuple[int, ...], seconds: int,
                measure: Callable[[Path, int, int, int], dict[str, float]] | None = None,
                loop: Callable[[Path, int, int, float], float] = loop_ms) -> list[dict[str, Any]]:
    """Each (role -> (IR path, cell key)) at every thread count and batch size of the study, timed by
    benchmark_app and compared with the harness: ms at the smallest batch, images/s at the others.
    A plain loop with the harness's method runs just before and just after each benchmark_app run;
    a row that disagrees says whether that loop agrees with benchmark_app (``cause``)."""
    if measure is None:
        from cnn_compress.runtimes.ov_runtime import benchmark_app as measure
    small = min(batch_sizes)
    rows = []
    for role, (path, key) in cells.items():
        for threads, times in timings.items():
            for bs in sorted(batch_sizes):
                ms = statistics.median(times[key][bs])
                row = {"artifact": key, "role": role, "threads": threads, "batch": bs,
                       "metric": "ms" if bs == small else "img/s"}
                figure = functools.partial(_figure, bs if bs != small else 0)
                harness = figure(ms)
                before = loop(path, bs, threads, seconds / 2)
                try:
                    app = measure(path, bs, threads, seconds)
                except RuntimeError as exc:
                    rows.append(row | {"harness": round(harness, 4), "benchmark_app": None, "diff_pct": None,
                                       "loop_now": None, "agree": False, "verdict": f"failed: {exc}", "cause": ""})
                    continue
                now = figure((before + loop(path, bs, threads, seconds / 2)) / 2)
                ref = app["ms_median"] if bs == small else app["ips"]
                pct, agree = agreement(harness, ref)
                rows.append(row | {"harness": round(harness, 4), "benchmark_app": round(ref, 4), "diff_pct": pct,
                                   "loop_now": round(now, 4), "agree": agree, "verdict": verdict(pct, agree),
                                   "cause": "" if agree else cause(harness, now, ref)})
    return rows
