"""Benchmark every variant the same way: accuracy, size, params, MACs, latency, throughput.

Timing: every artifact of a run is loaded first, then timed *interleaved*: ``repeats`` rounds, each
round one call of every artifact in turn (the order rotated every round), under ``inference_mode``
with a fixed thread count. A machine that slows down for a while slows every artifact alike, so
ratios within one run hold where two separate timings disagreed by a third. Latency is the median
with a distribution-free 95% interval and the p90; throughput is images/s at the median. With
``benchmark.control`` the first artifact is loaded and timed twice, and the run records whether the
two agree within 5%. The machine (CPU model, INT8-relevant flags, threads, library versions) is
recorded beside the numbers.
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnn_compress.core.errors import CheckpointError
from cnn_compress.data.dataset import Dataset, choice_split, normalize, report_split
from cnn_compress.data.evaluation import Predict, predict_logits, score
from cnn_compress.measure.compression import compress_artifact
from cnn_compress.measure.config import BenchmarkConfig
from cnn_compress.measure.stats import artifact_stats
from cnn_compress.runtimes.ov_runtime import artifact_files
from cnn_compress.runtimes.runners import Runner, load_runner


def time_predict(
    predict: Predict, x: torch.Tensor, warmup: int, repeats: int, max_seconds: float = float("inf"),
    cuda_events: bool = False,
) -> list[float]:
    """Milliseconds of up to ``repeats`` calls after ``warmup`` untimed ones.

    Warm-up stops once half of ``max_seconds`` is spent (after at least one call) and timing once
    ``max_seconds`` are spent (keeping at least 3 runs), so one very slow artifact (CPU FP16 at
    batch 64: seconds per call) cannot dominate the stage. With ``cuda_events`` the time is taken
    by CUDA events on the current stream around the call (GPU runners synchronise before returning).
    """
    times: list[float] = []
    with torch.inference_mode():
        warm_end = time.perf_counter() + max_seconds / 2
        for _ in range(warmup):
            predict(x)
            if time.perf_counter() > warm_end:
                break
        budget_end = time.perf_counter() + max_seconds
        for _ in range(repeats):
            times.append(_one_call(predict, x, cuda_events))
            if time.perf_counter() > budget_end and len(times) >= 3:
                break
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median_ci95(values: list[float]) -> tuple[float, float]:
    """Distribution-free 95% interval of the median: the order statistics x(i+1), x(n-i) with i the
    largest count for which P(Binomial(n, 1/2) <= i) <= 2.5% (the whole range for n < 6)."""
    ordered, n = sorted(values), len(values)
    # in integers: as floats, comb(n, k) / 2**n overflows past about 1,030 calls (a fast machine's burst)
    total, term, count, i = 2**n, 1, 1, 0  # count = sum of comb(n, k) for k <= i
    while i + 1 < n:
        term = term * (n - i) // (i + 1)  # comb(n, i + 1)
        if 40 * (count + term) > total:  # P(Binomial(n, 1/2) <= i + 1) > 1/40
            break
        i, count = i + 1, count + term
    return ordered[i], ordered[n - 1 - i]


@dataclass
class Timed:
    """One runner under interleaved timing: its calls' milliseconds per batch size."""

    predict: Predict
    cuda: bool = False
    times: dict[int, list[float]] = field(default_factory=dict)


def _one_call(predict: Predict, x: torch.Tensor, cuda: bool) -> float:
    if cuda:
        start_ev, end_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start_ev.record()
        predict(x)
        end_ev.record()
        end_ev.synchronize()
        return start_ev.elapsed_time(end_ev)
    start = time.perf_counter()
    predict(x)
    return 1000.0 * (time.perf_counter() - start)


def time_interleaved(timed: dict[str, Timed], inputs: dict[int, torch.Tensor], cfg: BenchmarkConfig,
                     burst_ms: float = 0.0) -> None:
    """Fill ``timed[*].times[bs]``: warm-up per runner, then ``cfg.repeats`` round-robin rounds.

    A runner stops once it has spent ``cfg.max_seconds`` at a batch size (keeping at least 3 runs),
    so one very slow artifact (CPU FP16 at batch 64) cannot dominate the stage. With ``burst_ms``
    each turn is one untimed call, then timed calls back to back for at least that long: a model in
    steady use. Without it a turn is one call straight after every other runner's, so it finds its
    weights out of cache, by how much depending on which runners went before.
    """
    with torch.inference_mode():
        for bs, x in inputs.items():
            for t in timed.values():  # warm-up only (no timed repeats), bounded by max_seconds / 2
                t.times[bs] = time_predict(t.predict, x, cfg.warmup, 0, cfg.max_seconds, t.cuda)
            keys, spent = list(timed), dict.fromkeys(timed, 0.0)
            for r in range(cfg.repeats):
                for key in keys[r % len(keys):] + keys[: r % len(keys)]:
                    if spent[key] > 1000.0 * cfg.max_seconds and len(timed[key].times[bs]) >= 3:
                        continue
                    calls = _turn(timed[key], x, burst_ms)
                    timed[key].times[bs].extend(calls)
                    spent[key] += sum(calls)


def _turn(t: Timed, x: torch.Tensor, burst_ms: float) -> list[float]:
    """One runner's turn in a round: a single call, or an untimed one and then ``burst_ms`` of calls."""
    if burst_ms <= 0:
        return [_one_call(t.predict, x, t.cuda)]
    t.predict(x)
    calls = [_one_call(t.predict, x, t.cuda)]
    while sum(calls) < burst_ms:
        calls.append(_one_call(t.predict, x, t.cuda))
    return calls


def timing_row(times: dict[int, list[float]]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for bs, values in times.items():
        median, (lo, hi) = statistics.median(values), median_ci95(values)
        row |= {f"timed_runs_b{bs}": len(values), f"latency_ms_b{bs}_median": round(median, 4),
                f"latency_ms_b{bs}_ci95": [round(lo, 4), round(hi, 4)],
                f"latency_ms_b{bs}_p90": round(percentile(values, 90), 4),
                f"throughput_b{bs}": round(1000.0 * bs / median, 2)}
    return row


def evaluate_artifact(path: Path, ds: Dataset, cfg: BenchmarkConfig, compile: bool = False) -> tuple[dict[str, Any], Runner]:
    """Accuracy and on-disk bytes of one artifact, with its loaded runner. Accuracy is on the test split,
    or, when the data has a selection split, on ``report`` (``top1``) and on ``select`` (``top1_select``,
    the figure any choice between artifacts reads: docs/selection-split.md)."""
    runner = load_runner(path, cfg.threads, tuple(cfg.batch_sizes) if compile else ())
    blob = b"".join(f.read_bytes() for f in artifact_files(path))
    # zlib of the file: zeros left by pruning compress, so sparsity shows as size (dense files do not shrink)
    row: dict[str, Any] = {"runtime": runner.runtime, "size_bytes": len(blob), "size_zlib_bytes": len(zlib.compress(blob, 9))}
    images, labels = ds.split(report_split(ds))
    row |= score(predict_logits(runner.predict, images, ds.mean, ds.std, cfg.eval_batch_size), labels)
    if ds.has_selection:
        images, labels = ds.split(choice_split(ds, "test"))
        chosen = score(predict_logits(runner.predict, images, ds.mean, ds.std, cfg.eval_batch_size), labels)
        row |= {"split": report_split(ds)} | {f"{k}_select": v for k, v in chosen.items()}
    return row, runner


def timing_inputs(ds: Dataset, batch_sizes: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """Normalised test images (repeated when the split is smaller than the batch)."""
    images, _ = ds.split("test")
    return {bs: normalize(images[torch.arange(bs) % len(images)], ds.mean, ds.std) for bs in batch_sizes}


def benchmark_variant(path: Path, ds: Dataset, cfg: BenchmarkConfig, compile: bool = False) -> dict[str, Any]:
    """Accuracy, on-disk bytes and timing of one artifact on its own."""
    row, runner = evaluate_artifact(path, ds, cfg, compile)
    timed = {"artifact": Timed(runner.predict, runner.device == "cuda")}
    time_interleaved(timed, timing_inputs(ds, cfg.batch_sizes), cfg)
    return row | timing_row(timed["artifact"].times)


def _compiled(path: Path, ds: Dataset, cfg: BenchmarkConfig, skipped: dict[str, str]
              ) -> tuple[dict[str, Any], Runner] | None:
    """Accuracy under ``torch.compile`` and the compiled runner, for timing with the others.

    Compilation needs a C++ compiler; where it fails, the reason goes to ``skipped`` and a warning
    to stderr instead of stopping the stage.
    """
    try:
        return evaluate_artifact(path, ds, cfg, compile=True)
    except CheckpointError:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
        print(f"warning: torch.compile of {path.name} failed, row left out ({reason})", file=sys.stderr)
        skipped[f"{path.stem}+compile"] = reason
        return None


def machine_info(threads: int) -> dict[str, Any]:
    """What the timings depend on: CPU model and INT8 flags, threads, library versions."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    import importlib.metadata

    import onnxruntime

    try:
        trt_version = importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        trt_version = "none"
    try:
        ov_version = importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        ov_version = "none"
    return {"tensorrt": trt_version, "openvino": ov_version,
        "cpu": cpu, "threads": threads, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "int8_flags": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"}),
    }


def collect_artifacts(root: Path, check_files: bool = False) -> list[tuple[str, Path, str]]:
    """(artifact name, file, what it is) for a variant's checkpoints, quantized and exported files.

    A manifest that is not what the quantize and export stages write (truncated, not a mapping, an
    entry without its file) is a one-line :class:`CheckpointError` naming it; with ``check_files`` (the
    benchmark stage) so is a listed file that is missing, or a folder without its manifest, which
    otherwise adds nothing.
    """
    found = [(name, root / f"{name}.pt", f"{name} checkpoint") for name in ("pruned", "finetuned")]
    for sub in ("quantized", "exported"):
        manifest = root / sub / "manifest.json"
        if check_files and manifest.parent.is_dir() and not manifest.is_file():
            raise CheckpointError(f"{manifest}: missing (re-run the stage that writes {manifest.parent})")
        if manifest.is_file():
            for name, file, describe in read_manifest(manifest):
                if check_files and not (root / sub / file).exists():
                    raise CheckpointError(f"{manifest}: artifact '{name}' names {file}, which is missing "
                                          f"(re-run the stage that writes {root / sub})")
                found.append((name, root / sub / file, describe))
    return found


def read_manifest(manifest: Path) -> list[tuple[str, str, str]]:
    """(name, file inside the manifest's folder, what it is) of every entry; bad shapes are one line."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{manifest}: {what} (re-run the stage that writes {manifest.parent})")

    try:
        data = json.loads(manifest.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot be read ({exc.__class__.__name__})") from None
    except json.JSONDecodeError as exc:
        raise bad(f"not valid JSON, truncated or damaged ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise bad(f"expected a mapping of artifact name -> entry, got {type(data).__name__}")
    out = []
    for name, entry in data.items():
        file = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(entry, dict):
            raise bad(f"entry '{name}' must be a mapping with a 'file', got {type(entry).__name__}")
        if not isinstance(file, str) or not file or Path(file).is_absolute() or ".." in Path(file).parts:
            raise bad(f"entry '{name}' needs 'file': a file name inside {manifest.parent.name}/, got {file!r}")
        describe = entry.get("describe", name)
        out.append((name, file, describe if isinstance(describe, str) else name))
    return out


def describe_artifact(name: str, path: Path, compressed_dir: Path | None, fallback: Path | None = None) -> dict[str, Any]:
    """Params, sparsity and MACs counted from the file itself (``fallback``: a checkpoint to count
    from when the format is opaque, recorded), and its true compressed size."""
    try:
        row = artifact_stats(path) | {"stats_from": path.name}
    except CheckpointError:
        if fallback is None:
            raise
        row = artifact_stats(fallback) | {"stats_from": fallback.name}
    if compressed_dir is not None:
        row |= compress_artifact(path, compressed_dir / f"{name}.ccz")
    return row


def run_benchmark(artifacts: list[tuple[str, Path, str]], ds: Dataset, cfg: BenchmarkConfig,
                  compressed_dir: Path | None = None, fallback: Path | None = None) -> dict[str, Any]:
    """Benchmark every artifact, timed interleaved; ``benchmark.compile`` names that are present are
    also timed under ``torch.compile`` (rows '<name>+compile'), names a variant does not build are
    listed as skipped."""
    torch.set_num_threads(cfg.threads)
    rows: dict[str, Any] = {}
    skipped = {f"{name}+compile": "not built by this variant"
               for name in sorted(set(cfg.compile) - {name for name, _, _ in artifacts})}
    timed: dict[str, Timed] = {}
    for name, path, describe in artifacts:
        stats = describe_artifact(name, path, compressed_dir, fallback)
        row, runner = evaluate_artifact(path, ds, cfg)
        rows[name], timed[name] = {"describe": describe} | row | stats, Timed(runner.predict, runner.device == "cuda")
        if name in cfg.compile and (compiled := _compiled(path, ds, cfg, skipped)):
            rows[f"{name}+compile"] = rows[name] | compiled[0]
            timed[f"{name}+compile"] = Timed(compiled[1].predict)
    control = None
    if cfg.control and artifacts:
        control = artifacts[0][0]
        again = load_runner(artifacts[0][1], cfg.threads)
        timed[f"{control}#control"] = Timed(again.predict, again.device == "cuda")
    time_interleaved(timed, timing_inputs(ds, cfg.batch_sizes), cfg)
    for key, row in rows.items():
        row |= timing_row(timed[key].times) | {"timing": f"interleaved with {len(timed) - 1} others"}
    result = {"machine": machine_info(cfg.threads), "artifacts": rows}
    if control is not None:
        result["control"] = control_check(control, timed[control].times, timed[f"{control}#control"].times)
    return result | ({"skipped": skipped} if skipped else {})


def control_check(name: str, first: dict[int, list[float]], second: dict[int, list[float]]) -> dict[str, Any]:
    """The same artifact timed twice in one run: do the two medians agree within 5%?"""
    out: dict[str, Any] = {"artifact": name}
    for bs in first:
        a, b = statistics.median(first[bs]), statistics.median(second[bs])
        out[f"b{bs}"] = {"median_ms": [round(a, 4), round(b, 4)], "ratio": round(b / a, 4),
                         "agree_within_5pct": abs(b / a - 1) <= 0.05}
    return out


HEADLINE = {"top1": 2, "top5": 2, "sparsity": 2}  # key -> decimals, in the per-artifact metrics files
# Accuracy and size go to metrics/<variant>/<artifact>.json, timings apart to timings/<variant>/<artifact>.json,
# so a re-run that changes no weight changes no row of ``dvc metrics diff --targets metrics -R``. Every
# key is defined in the README's "Compare" section (tests/test_newcomer.py checks).


def headline(row: dict[str, Any], batch_sizes: tuple[int, ...] = ()) -> dict[str, Any]:
    """Accuracy, size, params and MACs of one artifact: what ``dvc metrics show``
    lists per artifact, short names and rounded values; they change only when the artifact does."""
    out = {k: round(float(row[k]), d) for k, d in HEADLINE.items()}
    out |= {"mparams_nz": round(row["params_nonzero"] / 1e6, 4), "mmacs": round(row["macs"] / 1e6, 2),
            "kib": round(row["size_bytes"] / 1024, 1)}
    if "size_compressed_bytes" in row:
        out["ccz_kib"] = round(row["size_compressed_bytes"] / 1024, 1)
    return out


def timing_headline(row: dict[str, Any], batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    """Latency at the smallest and throughput at the largest batch size: apart from
    ``headline`` because they differ on every run, whether or not anything changed."""
    small, large = min(batch_sizes), max(batch_sizes)
    return {f"ms_b{small}": round(row[f"latency_ms_b{small}_median"], 3),
            f"ips_b{large}": round(row[f"throughput_b{large}"], 1)}
