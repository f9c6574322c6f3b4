"""Benchmark every variant the same way: accuracy, size, params, MACs, latency, throughput.

Timing: fixed thread count, warm-up runs, then ``repeats`` timed runs under ``inference_mode``;
latency is the median and p90 per batch, throughput is images/s at the median. The machine (CPU
model, INT8-relevant flags, thread count, library versions) is recorded beside the numbers.
"""
from __future__ import annotations

import platform
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import torch

from cnn_compress.core.errors import CheckpointError
from cnn_compress.data.dataset import Dataset, normalize
from cnn_compress.data.evaluation import Predict, predict_logits, score
from cnn_compress.measure.compression import compress_artifact
from cnn_compress.measure.config import BenchmarkConfig
from cnn_compress.measure.stats import artifact_stats
from cnn_compress.runtimes.runners import load_runner


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
            if cuda_events:
                start_ev, end_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start_ev.record()
                predict(x)
                end_ev.record()
                end_ev.synchronize()
                times.append(start_ev.elapsed_time(end_ev))
            else:
                start = time.perf_counter()
                predict(x)
                times.append(1000.0 * (time.perf_counter() - start))
            if time.perf_counter() > budget_end and len(times) >= 3:
                break
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def benchmark_variant(path: Path, ds: Dataset, cfg: BenchmarkConfig, compile: bool = False) -> dict[str, Any]:
    """Accuracy on the test split, on-disk bytes and timing of one artifact."""
    runner = load_runner(path, cfg.threads, tuple(cfg.batch_sizes) if compile else ())
    images, labels = ds.split("test")
    blob = path.read_bytes()
    # zlib of the file: zeros left by pruning compress, so sparsity shows as size (dense files do not shrink)
    row: dict[str, Any] = {"runtime": runner.runtime, "size_bytes": len(blob), "size_zlib_bytes": len(zlib.compress(blob, 9))}
    row |= score(predict_logits(runner.predict, images, ds.mean, ds.std, cfg.eval_batch_size), labels)
    for bs in cfg.batch_sizes:
        reps = (images[torch.arange(bs) % len(images)])
        times = time_predict(runner.predict, normalize(reps, ds.mean, ds.std), cfg.warmup, cfg.repeats,
                             cfg.max_seconds, cuda_events=runner.device == "cuda")
        median = statistics.median(times)
        row |= {f"timed_runs_b{bs}": len(times), f"latency_ms_b{bs}_median": round(median, 4), f"latency_ms_b{bs}_p90": round(percentile(times, 90), 4),
                f"throughput_b{bs}": round(1000.0 * bs / median, 2)}
    return row


def _compiled_row(path: Path, ds: Dataset, cfg: BenchmarkConfig, eager: dict[str, Any],
                  skipped: dict[str, str]) -> dict[str, Any] | None:
    """The eager row's sizes and stats with accuracy and timing under ``torch.compile``.

    Compilation needs a C++ compiler; where it fails, the reason goes to ``skipped`` and a warning
    to stderr instead of stopping the stage.
    """
    try:
        timed = benchmark_variant(path, ds, cfg, compile=True)
    except CheckpointError:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
        print(f"warning: torch.compile of {path.name} failed, row left out ({reason})", file=sys.stderr)
        skipped[f"{path.stem}+compile"] = reason
        return None
    return eager | timed


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
    return {"tensorrt": trt_version,
        "cpu": cpu, "threads": threads, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "int8_flags": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"}),
    }


def collect_artifacts(root: Path) -> list[tuple[str, Path, str]]:
    """(artifact name, file, what it is) for a variant's checkpoints, quantized and exported files."""
    import json

    found = [(name, root / f"{name}.pt", f"{name} checkpoint") for name in ("pruned", "finetuned")]
    for sub in ("quantized", "exported"):
        manifest = root / sub / "manifest.json"
        if manifest.is_file():
            for name, entry in json.loads(manifest.read_text()).items():
                found.append((name, root / sub / entry["file"], entry.get("describe", name)))
    return found


def measure_artifact(name: str, path: Path, ds: Dataset, cfg: BenchmarkConfig, compressed_dir: Path | None,
                     fallback: Path | None = None) -> dict[str, Any]:
    """One row: accuracy, sizes and timing of the file, with params, sparsity and MACs counted from
    the file itself (``fallback``: a checkpoint to count from when the format is opaque, recorded)."""
    row = benchmark_variant(path, ds, cfg)
    try:
        row |= artifact_stats(path) | {"stats_from": path.name}
    except CheckpointError:
        if fallback is None:
            raise
        row |= artifact_stats(fallback) | {"stats_from": fallback.name}
    if compressed_dir is not None:
        row |= compress_artifact(path, compressed_dir / f"{name}.ccz")
    return row


def run_benchmark(artifacts: list[tuple[str, Path, str]], ds: Dataset, cfg: BenchmarkConfig,
                  compressed_dir: Path | None = None, fallback: Path | None = None) -> dict[str, Any]:
    """Benchmark every artifact; ``benchmark.compile`` names that are present are also timed under
    ``torch.compile`` (rows '<name>+compile'), names a variant does not build are listed as skipped."""
    torch.set_num_threads(cfg.threads)
    rows: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    names = {name for name, _, _ in artifacts}
    for name in sorted(set(cfg.compile) - names):
        skipped[f"{name}+compile"] = "not built by this variant"
    for name, path, describe in artifacts:
        rows[name] = {"describe": describe} | measure_artifact(name, path, ds, cfg, compressed_dir, fallback)
        if name in cfg.compile and (row := _compiled_row(path, ds, cfg, rows[name], skipped)):
            rows[f"{name}+compile"] = row
    return {"machine": machine_info(cfg.threads), "artifacts": rows} | ({"skipped": skipped} if skipped else {})


HEADLINE = {"top1": 2, "top5": 2, "sparsity": 2}  # key -> decimals, in the per-artifact metrics files


def headline(row: dict[str, Any], batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    """The few figures ``dvc metrics show`` lists per artifact (the rest stays in the details file):
    short names and rounded values so a table of every variant fits a 120-column terminal."""
    small, large = min(batch_sizes), max(batch_sizes)
    out = {k: round(float(row[k]), d) for k, d in HEADLINE.items()}
    out |= {"mparams": round(row["params_nonzero"] / 1e6, 4), "mmacs": round(row["macs"] / 1e6, 2),
            "kib": round(row["size_bytes"] / 1024, 1)}
    if "size_compressed_bytes" in row:
        out["ccz_kib"] = round(row["size_compressed_bytes"] / 1024, 1)
    out[f"ms_b{small}"] = round(row[f"latency_ms_b{small}_median"], 3)
    out[f"ips_b{large}"] = round(row[f"throughput_b{large}"], 1)
    return out
