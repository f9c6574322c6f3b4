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

from cnn_compress.checkpoint import load_checkpoint
from cnn_compress.compression import compress_artifact
from cnn_compress.config import BenchmarkConfig
from cnn_compress.data import Dataset, normalize
from cnn_compress.errors import CheckpointError, ConfigError
from cnn_compress.evaluation import Predict, predict_logits, score
from cnn_compress.models import count_macs, count_params
from cnn_compress.pruning import global_sparsity
from cnn_compress.runtimes import load_runner


def time_predict(
    predict: Predict, x: torch.Tensor, warmup: int, repeats: int, max_seconds: float = float("inf"),
    cuda_events: bool = False,
) -> list[float]:
    """Milliseconds of up to ``repeats`` calls after ``warmup`` untimed ones.

    Timing stops early once ``max_seconds`` are spent (keeping at least 3 runs), so one very slow
    variant cannot dominate the stage. With ``cuda_events`` the time is taken by CUDA events on
    the current stream around the call (GPU runners synchronise before returning).
    """
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            predict(x)
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


def model_stats(path: Path) -> dict[str, Any]:
    """Params, nonzero params, MACs and sparsity of a torch checkpoint (fp32 view)."""
    ckpt = load_checkpoint(path)
    model = ckpt.model.float()
    total, nonzero = count_params(model)
    return {"params": total, "params_nonzero": nonzero, "macs": count_macs(model, ckpt.input_shape),
            "sparsity": global_sparsity(model)}


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


def collect_variants(models_dir: Path, baseline: Path | None) -> list[tuple[str, Path, Path]]:
    """(variant name, artifact, the torch checkpoint its params and MACs come from)."""
    models_dir = Path(models_dir)
    finetuned = models_dir / "finetuned.pt"
    variants = [("baseline", baseline, baseline)] if baseline is not None else []
    variants += [(name, models_dir / f"{name}.pt", models_dir / f"{name}.pt") for name in ("pruned", "finetuned")]
    for sub in ("quantized", "exported"):
        manifest = models_dir / sub / "manifest.json"
        if manifest.is_file():
            import json

            for name, entry in json.loads(manifest.read_text()).items():
                variants.append((name, models_dir / sub / entry["file"], finetuned))
    return variants


def run_benchmark(
    models_dir: Path, ds: Dataset, cfg: BenchmarkConfig, compressed_dir: Path | None = None,
    baseline: Path | None = None, branch: bool = False,
) -> dict[str, Any]:
    """Benchmark every variant under ``models_dir`` (and ``baseline``); the result is
    ``metrics/benchmark.json``.

    With ``compressed_dir``, each variant's weights are also written there in the compressed
    format (``compression.py``) and its true compressed size is reported. A sweep ``branch`` may
    build fewer formats (``*.sweep_formats``), so ``benchmark.compile`` names it lacks are skipped.
    """
    torch.set_num_threads(cfg.threads)
    stats_cache: dict[Path, dict[str, Any]] = {}
    rows: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    variants = collect_variants(models_dir, baseline)
    unknown = set(cfg.compile) - {name for name, _, _ in variants}
    if unknown and not branch:
        raise ConfigError(f"benchmark.compile: no variant named {', '.join(sorted(unknown))} "
                          f"(variants: {', '.join(name for name, _, _ in variants)})")
    for name, path, source in variants:
        if source not in stats_cache:
            stats_cache[source] = model_stats(source)
        rows[name] = benchmark_variant(path, ds, cfg) | stats_cache[source]
        if compressed_dir is not None:
            rows[name] |= compress_artifact(path, compressed_dir / f"{name}.ccz")
        if name in cfg.compile and (row := _compiled_row(path, ds, cfg, rows[name], skipped)):
            rows[f"{name}+compile"] = row
    return {"machine": machine_info(cfg.threads), "variants": rows} | ({"skipped": skipped} if skipped else {})
