"""deploy_cpu (studies/deploy-cpu/): how much faster and smaller is the model, at what accuracy, on which CPU runtime?

Every variant of the study folder (a dense one and structured / unstructured pruned ones, each
fine-tuned) is built by the pipeline into FP32 and INT8 artifacts for four runtimes: PyTorch
eager, ``torch.compile``, ONNX Runtime and OpenVINO. Accuracy, MACs and sizes come from each
variant's benchmark stage (measured from the artifact); this module times all of them again
*together*: per thread count, one process, every artifact in round-robin rounds, with the dense
FP32 model timed twice as a control. It also measures the runtime's practical FP32 and INT8
peak (a large convolution stack through OpenVINO) to say how close each artifact gets, and
profiles the fastest artifact per layer.

The review protocol (``protocol.py``, docs in studies/deploy-cpu/README.md): choices read the
``select`` split and shown accuracies the ``report`` split when the data has them; the dense
reference's fine-tuning budget is checked against every variant's; the dense OpenVINO INT8 anchor,
the winner and the fastest artifact at any accuracy are timed again by ``benchmark_app`` and must
agree with the harness within 15%.
"""
from __future__ import annotations

import functools
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
import torch

from cnn_compress.core.config import parse_section, require
from cnn_compress.core.errors import UserError
from cnn_compress.data.dataset import load_dataset
from cnn_compress.measure.benchmark import (
    Timed,
    collect_artifacts,
    control_check,
    machine_info,
    median_ci95,
    time_interleaved,
    timing_inputs,
)
from cnn_compress.measure.config import BenchmarkConfig
from cnn_compress.prune.config import PruneConfig
from cnn_compress.runtimes.runners import load_runner
from cnn_compress.studies.common import BURST_MS
from cnn_compress.studies.deploy_cpu import protocol
from cnn_compress.studies.registry import StudyContext, register_study

# artifact name -> (runtime, precision): the cells of the study's grid
GRID = {"finetuned": ("torch eager", "FP32"), "int8_static": ("torch eager", "INT8"),
        "fp32+compile": ("torch.compile", "FP32"), "int8_static+compile": ("torch.compile", "INT8"),
        "onnx": ("ONNX Runtime", "FP32"), "ort_int8": ("ONNX Runtime", "INT8"),
        "openvino_fp32": ("OpenVINO", "FP32"), "openvino_int8": ("OpenVINO", "INT8")}
ANCHORS = {"eager FP32": "finetuned", "ORT INT8": "ort_int8", "OpenVINO INT8": "openvino_int8"}


@dataclass(frozen=True)
class DeployConfig:
    SECTION: ClassVar[str] = "study.deploy_cpu"
    scale: Literal["smoke", "cpu", "paper"] = "smoke"
    dense: str = "dense"  # the unpruned variant: the anchors and the accuracy reference
    threads: tuple[int, ...] = (1, 2)
    batch_sizes: tuple[int, ...] = (1, 64)  # latency at the smallest, throughput at the largest
    warmup: int = 3
    rounds: int = 15  # round-robin rounds per batch size and thread count
    max_seconds: float = 3.0  # per artifact, batch size and thread count
    compile: tuple[str, ...] = ("fp32", "int8_static")  # quantize formats also timed under torch.compile
    max_drop: float = 1.0  # top-1 points an artifact may lose against dense FP32 to count for the targets
    peak: bool = True  # measure the runtime's FP32 / INT8 peak on a large convolution stack
    profile_runs: int = 50
    # each artifact's turn in a round: an untimed call, then calls back to back for this long (0: one cold call)
    burst_ms: float = BURST_MS
    cross_check: bool = True  # time the dense INT8 anchor, the winner and the fastest with benchmark_app too
    cross_check_seconds: int = 3  # benchmark_app -t, per artifact, batch size and thread count

    def __post_init__(self) -> None:
        require(len(self.threads) > 0 and all(t >= 1 for t in self.threads), f"{self.SECTION}.threads", "must be >= 1")
        require(len(self.batch_sizes) > 0 and all(b >= 1 for b in self.batch_sizes), f"{self.SECTION}.batch_sizes",
                "must be >= 1")
        require(self.rounds >= 3, f"{self.SECTION}.rounds", "must be >= 3")
        require(self.max_seconds > 0, f"{self.SECTION}.max_seconds", "must be > 0")
        require(self.burst_ms >= 0, f"{self.SECTION}.burst_ms", f"must be >= 0, got {self.burst_ms}")
        require(self.cross_check_seconds >= 1, f"{self.SECTION}.cross_check_seconds",
                f"must be >= 1, got {self.cross_check_seconds}")


@dataclass
class Cell:
    """One artifact of one variant in the grid, with the file it is timed from."""

    variant: str
    name: str
    path: Path
    compile: bool
    stats: dict[str, Any]
    runtime: str = ""
    precision: str = ""

    @property
    def key(self) -> str:
        return f"{self.variant}/{self.name}"


def collect_cells(variants: list[str], compile: tuple[str, ...]) -> list[Cell]:
    """Every grid artifact of every variant, with accuracy, MACs and sizes from its benchmark."""
    cells = []
    for variant in variants:
        try:
            rows = json.loads(Path("variants", variant, "benchmark.json").read_text())["artifacts"]
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"study: variant {variant} has no benchmark results ({exc})") from None
        files = {name: path for name, path, _ in collect_artifacts(Path("variants", variant))}
        for name, (runtime, precision) in [*GRID.items(), *fixed_point_cells(variant).items()]:
            base = name.removesuffix("+compile")
            if name.endswith("+compile") and base not in compile:
                continue
            if base in files and base in rows:
                cells.append(Cell(variant, name, files[base], name.endswith("+compile"), rows[base], runtime, precision))
    return cells


def fixed_point_cells(variant: str) -> dict[str, tuple[str, str]]:
    """The variant's N-bit fixed-point artifacts (quantize manifest type ``fixed``): float weights on
    an N-bit grid, run by torch eager; they are here for their true compressed size."""
    try:
        manifest = json.loads(Path("variants", variant, "quantized", "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    cells = {}
    for name, entry in manifest.items():
        if entry.get("type") == "fixed":
            bits = entry.get("mean_bits", entry.get("bits"))  # a manifest without them: still a row
            width = f"{bits:g}-bit" if isinstance(bits, (int, float)) else "N-bit"
            cells[name] = ("torch eager", f"{width} W" + ("+A" if "w+a" in entry.get("describe", "") else ""))
    return cells


def time_cells(cells: list[Cell], dense: Cell, cfg: DeployConfig, ds: Any, threads: int,
               compiled: dict[str, Any]) -> tuple[dict, dict]:
    """All cells interleaved at one thread count; returns key -> {bs: times} and the control check.
    ``compiled`` keeps torch.compile runners across thread counts (inductor's kernels read the
    thread count when they run; compiling again would cost minutes)."""
    torch.set_num_threads(threads)
    allow_recompiles(sum(c.compile for c in cells))
    timed = {}
    for cell in cells:
        if cell.compile:
            if cell.key not in compiled:
                compiled[cell.key] = load_runner(cell.path, threads, tuple(cfg.batch_sizes))
            runner = compiled[cell.key]
        else:
            runner = load_runner(cell.path, threads)
        timed[cell.key] = Timed(runner.predict)
    timed["#control"] = Timed(load_runner(dense.path, threads).predict)
    bench = BenchmarkConfig(batch_sizes=cfg.batch_sizes, warmup=cfg.warmup, repeats=cfg.rounds,
                            max_seconds=cfg.max_seconds, threads=threads)
    time_interleaved(timed, timing_inputs(ds, cfg.batch_sizes), bench, cfg.burst_ms)
    control = control_check(dense.key, timed[dense.key].times, timed.pop("#control").times)
    return {k: t.times for k, t in timed.items()}, control


def allow_recompiles(models: int) -> None:
    """Dynamo keeps one cache per code object, guarded on the module: every compiled model of one
    architecture shares its ``forward`` and counts as a recompile of it. Past the limit (8) it
    silently runs the rest eagerly, so a grid of many variants would time eager models as
    compiled ones. Allow one entry per model per batch size."""
    import torch._dynamo.config as dynamo

    need = 2 * models + 8
    dynamo.recompile_limit = max(dynamo.recompile_limit, need)
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4 * need)


@functools.cache
def _peak_models(batch: int) -> tuple[tuple[tuple[str, Any], ...], torch.Tensor, int]:
    """The peak probe's OpenVINO models (FP32 and NNCF INT8), its input and its MACs: built once for
    every thread count (the conversion and the calibration cost more than the timed runs)."""
    from cnn_compress.runtimes import ov_runtime

    torch.manual_seed(0)
    layers = [m for _ in range(4) for m in (torch.nn.Conv2d(128, 128, 3, padding=1, bias=False), torch.nn.ReLU())]
    model, x = torch.nn.Sequential(*layers).eval(), torch.randn(batch, 128, 28, 28)
    fp32 = ov_runtime.convert(model, x)
    return (("FP32", fp32), ("INT8", ov_runtime.quantize(fp32, torch.randn(16, 128, 28, 28)))), x, 4 * 128 * 128 * 9 * 28 * 28 * batch


def measure_peaks(threads: int, batch: int = 8, runs: int = 10) -> dict[str, float]:
    """MAC/s of a 4-layer 128-channel 3x3 convolution stack at 28x28 through OpenVINO, FP32 and
    NNCF INT8: what this runtime reaches on large, regular work (a practical peak)."""
    import time

    from cnn_compress.runtimes import ov_runtime

    models, x, macs = _peak_models(batch)
    peaks = {}
    for precision, ov_model in models:
        request = ov_runtime.compile_cpu(ov_model, threads).create_infer_request()
        request.infer({0: x.numpy()})
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            request.infer({0: x.numpy()})
            times.append(time.perf_counter() - start)
        peaks[precision] = macs / statistics.median(times)
    return peaks


def build_frame(cells: list[Cell], timings: dict[int, dict], peaks: dict[int, dict[str, float]],
                cfg: DeployConfig, ratios: dict[str, float], methods: dict[str, str] | None = None) -> pd.DataFrame:
    small, large = min(cfg.batch_sizes), max(cfg.batch_sizes)
    records = []
    for cell in cells:
        runtime, precision = cell.runtime, cell.precision
        s = cell.stats
        ratio = ratios.get(cell.variant, 0.0)
        rec = {"variant": cell.variant, "method": (methods or {}).get(cell.variant, "") if ratio else "none",
               "ratio": ratio, "artifact": cell.name,
               "runtime": runtime, "precision": precision, "top1": s["top1"],
               "top1_select": s.get("top1_select", s["top1"]), "sparsity": s["sparsity"],
               "mmacs": round(s["macs"] / 1e6, 2), "kib": round(s["size_bytes"] / 1024, 1),
               "ccz_kib": round(s.get("size_compressed_bytes", 0) / 1024, 1)}
        for t, times in timings.items():
            b1, bl = times[cell.key][small], times[cell.key][large]
            lo, hi = median_ci95(b1)
            rec |= {f"ms_b{small}_t{t}": round(statistics.median(b1), 4), f"ci_b{small}_t{t}": f"{lo:.3f}-{hi:.3f}",
                    f"p90_b{small}_t{t}": round(sorted(b1)[int(0.9 * (len(b1) - 1))], 4),
                    f"ips_b{large}_t{t}": round(1000.0 * large / statistics.median(bl), 1)}
            if t in peaks:
                achieved = s["macs"] * large / (statistics.median(bl) / 1000.0)
                peak = peaks[t]["INT8" if precision == "INT8" else "FP32"]  # N-bit rows compute in FP32
                rec[f"peak_pct_t{t}"] = round(100.0 * achieved / peak, 1)
        records.append(rec)
    return pd.DataFrame.from_records(records)


def add_finetune(frame: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """Each variant's fine-tuning epochs and distillation weight, from its finetune stage's record."""
    runs = {}
    for v in variants:
        try:
            runs[v] = json.loads(Path("variants", v, "finetune.json").read_text())
        except (OSError, ValueError):
            runs[v] = {}
    return frame.assign(ft_epochs=frame.variant.map(lambda v: int(runs[v].get("epochs", 0))),
                        kd=frame.variant.map(lambda v: float(runs[v].get("distill_weight", 0.0))))


def add_comparisons(frame: pd.DataFrame, cfg: DeployConfig) -> dict[str, float]:
    """Drop against dense FP32 eager (on the reported split, and on the choosing one as
    ``drop_select``), speedups against the three anchors, the Pareto fronts."""
    small, large, t = min(cfg.batch_sizes), max(cfg.batch_sizes), min(cfg.threads)
    dense = frame[frame.variant == cfg.dense].set_index("artifact")
    missing = [a for a in ANCHORS.values() if a not in dense.index]
    if missing:
        raise UserError(f"study: the dense variant '{cfg.dense}' lacks the anchor artifacts {missing} "
                        "(quantize.formats needs fp32 and int8_static, export.formats ort_int8 and openvino_int8)")
    ref_top1 = float(dense.loc["finetuned", "top1"])
    frame["drop"] = (ref_top1 - frame["top1"]).round(2)
    if "top1_select" not in frame:  # one split for both (a table made before the selection split)
        frame["top1_select"] = frame["top1"]
    frame["drop_select"] = (float(frame.loc[(frame.variant == cfg.dense) & (frame.artifact == "finetuned"),
                                            "top1_select"].iloc[0]) - frame["top1_select"]).round(2)
    lat, ips = f"ms_b{small}_t{t}", f"ips_b{large}_t{t}"
    for label, name in ANCHORS.items():
        frame[f"x_vs_{label}"] = (float(dense.loc[name, lat]) / frame[lat]).round(2)
    frame["x_ips_vs_OpenVINO INT8"] = (frame[ips] / float(dense.loc["openvino_int8", ips])).round(2)
    frame["front_latency"] = _front(frame, lat)
    frame["front_size"] = _front(frame, "ccz_kib")
    return {"dense_top1": ref_top1, "fp32_file_kib": float(dense.loc["finetuned", "kib"])}


def _front(frame: pd.DataFrame, cost: str) -> pd.Series:
    """True where no other artifact is at least as accurate and at least as cheap, and better in one."""
    xs, ys = frame[cost].to_numpy(), frame["top1"].to_numpy()
    return pd.Series([not ((ys >= y) & (xs <= x) & ((ys > y) | (xs < x))).any() for x, y in zip(xs, ys, strict=True)],
                     index=frame.index)


def eligible(frame: pd.DataFrame, cfg: DeployConfig) -> pd.DataFrame:
    """The artifacts within the accuracy budget on the choosing split (``select`` when prepared)."""
    return frame[frame["drop_select"] <= cfg.max_drop]


def targets(frame: pd.DataFrame, cfg: DeployConfig, ref: dict[str, float]) -> dict[str, Any]:
    """The issue's targets, each with the artifact that meets it best within ``max_drop``: every
    choice reads ``drop_select`` (the choosing split), never the reported ``top1`` / ``drop``."""
    small, large, t = min(cfg.batch_sizes), max(cfg.batch_sizes), min(cfg.threads)
    ok = eligible(frame, cfg)
    quickest = frame.loc[frame[f"ms_b{small}_t{t}"].idxmin()]  # at any accuracy: what the budget costs in speed
    overall = {"fastest_overall": f"{quickest.variant}/{quickest.artifact}",
               "fastest_overall_x_vs_ov_int8": float(quickest["x_vs_OpenVINO INT8"]),
               "fastest_overall_drop": round(float(quickest["drop"]), 2)}
    overall["max_drop"] = cfg.max_drop
    if ok.empty:
        return {"eligible": 0} | overall
    fastest = ok.loc[ok[f"ms_b{small}_t{t}"].idxmin()]
    smallest = ok.loc[ok["ccz_kib"].idxmin()]
    best_ips = ok.loc[ok[f"ips_b{large}_t{t}"].idxmax()]
    x_ov, x_ips = float(fastest["x_vs_OpenVINO INT8"]), float(best_ips["x_ips_vs_OpenVINO INT8"])
    shrink = ref["fp32_file_kib"] / max(float(smallest["ccz_kib"]), 1e-9)
    return {"eligible": int(len(ok)),
            "fastest": f"{fastest.variant}/{fastest.artifact}", "fastest_x_vs_ov_int8": x_ov,
            "fastest_drop": round(float(fastest["drop"]), 2), "fastest_drop_select": round(float(fastest["drop_select"]), 2),
            "fastest_x_vs_eager_fp32": float(fastest["x_vs_eager FP32"]), "latency_target_met": x_ov >= 2.0,
            "best_throughput": f"{best_ips.variant}/{best_ips.artifact}", "throughput_x_vs_ov_int8": x_ips,
            "throughput_target_met": x_ips >= 2.5,
            "smallest": f"{smallest.variant}/{smallest.artifact}", "size_x_vs_fp32_file": round(shrink, 2),
            "size_target_met": shrink >= 25.0} | overall


@register_study("deploy_cpu", DeployConfig)
def run(cfg: DeployConfig, ctx: StudyContext) -> dict[str, Any]:
    from cnn_compress.core.stage import PREPARED
    from cnn_compress.studies.deploy_cpu import report

    if cfg.dense not in ctx.variants:
        raise UserError(f"study.deploy_cpu.dense: '{cfg.dense}' is not a variant of this study")
    ds = load_dataset(PREPARED)
    cells = collect_cells(ctx.variants, cfg.compile)
    splits = score_cells(cells, ds, max(cfg.threads))
    dense = next(c for c in cells if c.variant == cfg.dense and c.name == "finetuned")
    timings, controls, peaks, compiled = {}, {}, {}, {}
    for t in cfg.threads:
        timings[t], controls[t] = time_cells(cells, dense, cfg, ds, t, compiled)
        if cfg.peak:
            peaks[t] = measure_peaks(t)
    prune = {v: parse_section(PruneConfig, (ctx.params.get("prune") or {})
                              | ((ctx.params["variants"][v] or {}).get("prune") or {})) for v in ctx.variants}
    ratios = {v: p.ratio for v, p in prune.items()}
    methods = {v: p.label() for v, p in prune.items()}  # chained passes: blocks+structured 0.3
    frame = build_frame(cells, timings, peaks, cfg, ratios, methods)
    frame = add_finetune(frame, ctx.variants)
    ref = add_comparisons(frame, cfg)
    goals = targets(frame, cfg, ref) | {"chosen_on": splits.choose}
    budget = protocol.budget_check(protocol.read_budgets(ctx.variants, len(ds.splits["train"])), cfg.dense)
    cross = (cross_check(cells, timings, cfg, goals.get("fastest"), goals.get("fastest_overall"))
             if cfg.cross_check else [])
    profile = _profile(frame, cells, cfg, ds)
    machine = machine_info(min(cfg.threads))
    report.write_deploy(ctx.out, frame, cfg, goals, controls, peaks, profile, machine, ref,
                        {"splits": splits, "budget": budget, "cross_check": cross})
    return {"dense_top1": ref["dense_top1"], **{k: v for k, v in goals.items() if not isinstance(v, str)},
            "controls_agree": all(c[f"b{b}"]["agree_within_5pct"] for c in controls.values() for b in cfg.batch_sizes),
            "choice_split": splits.choose, "report_split": splits.report, "reference_equal_budget": not budget,
            **({"cross_check_agree": all(r["agree"] for r in cross)} if cfg.cross_check else {})}


def score_cells(cells: list[Cell], ds: Any, threads: int) -> protocol.Splits:
    """Each cell's ``top1`` on the reported split and ``top1_select`` on the choosing one. With a
    selection split both are evaluated here (a ``+compile`` cell shares its artifact's); without
    one both are the benchmark stage's test accuracy."""
    splits = protocol.splits_of(ds)
    if not splits.separate:
        for cell in cells:
            cell.stats = cell.stats | {"top1_select": cell.stats["top1"]}
        return splits
    scored = protocol.split_accuracies([c.path for c in cells], ds, splits, threads)
    for cell in cells:
        choose, shown = scored[cell.path]
        cell.stats = cell.stats | {"top1": shown, "top1_select": choose}
    return splits


def cross_check(cells: list[Cell], timings: dict[int, dict], cfg: DeployConfig, winner: str | None,
                fastest: str | None = None) -> list[dict[str, Any]]:
    """benchmark_app beside the harness for the dense OpenVINO INT8 anchor, the winner and the
    fastest artifact at any accuracy."""
    irs = {c.key: c.path for c in cells if c.path.suffix == ".xml" and not c.compile}
    roles = protocol.cross_check_keys(set(irs), cfg.dense, winner, fastest)
    return protocol.cross_check({role: (irs[key], key) for role, key in roles.items()}, timings,
                                tuple(cfg.batch_sizes), cfg.cross_check_seconds)


def _profile(frame: pd.DataFrame, cells: list[Cell], cfg: DeployConfig, ds: Any) -> dict[str, Any]:
    """Per-layer time of the fastest eligible artifact, where its runtime has a profiler we read."""
    small, t = min(cfg.batch_sizes), min(cfg.threads)
    ok = eligible(frame, cfg)
    if ok.empty:
        return {}
    best = ok.loc[ok[f"ms_b{small}_t{t}"].idxmin()]
    cell = next(c for c in cells if c.variant == best.variant and c.name == best.artifact)
    x = timing_inputs(ds, (small,))[small]
    if cell.path.suffix == ".xml":
        from cnn_compress.runtimes import ov_runtime

        return {"artifact": cell.key, "layers": ov_runtime.layer_profile(cell.path, x, t, cfg.profile_runs)}
    if cell.path.suffix == ".onnx" and not cell.compile:
        return {"artifact": cell.key, "layers": ort_layer_profile(cell.path, x, t, cfg.profile_runs)}
    return {"artifact": cell.key, "layers": [], "note": f"no per-layer profile for {best.runtime} here"}


def ort_layer_profile(path: Path, x: torch.Tensor, threads: int, runs: int) -> list[dict[str, Any]]:
    """ONNX Runtime's own profiler: kernel time per node (µs per inference, mean over ``runs``)."""
    import tempfile

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: x.contiguous().numpy()})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[tuple[str, str], float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            key = (e["name"].removesuffix("_kernel_time"), e.get("args", {}).get("op_name", "?"))
            totals[key] = totals.get(key, 0.0) + float(e.get("dur", 0))
    rows = [{"layer": k[0], "type": k[1], "kernel": "onnxruntime-cpu", "us": round(v / runs, 2)} for k, v in totals.items()]
    return sorted(rows, key=lambda r: -r["us"])
