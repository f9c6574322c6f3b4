"""ResNet-18 (CIFAR stem): FP32 eager against every deploy artifact, in one run.

Trains ResNet-18 briefly on the default data (digits, so accuracy is real, not random-weight
noise), derives a structured 60% variant (torch-pruning, fine-tuned), then builds: ONNX,
ONNX Runtime INT8 (QDQ, per channel), torchao PT2E INT8 (optionally under torch.compile),
and TensorRT engines when TensorRT and a GPU are present. For each artifact it prints top-1,
on-disk size, true compressed size (compression.py), batch-1 latency (median, p90) and batch-64
throughput, with the speedup and size reduction against FP32 eager measured in the same run.
Goal for the best artifact: >= 25x faster at batch 1 and >= 25x smaller.

    python bench/deploy.py [--threads 1] [--epochs 4] [--ratio 0.6] [--compile]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from cnn_compress.core.config import parse_section  # noqa: E402
from cnn_compress.data.config import DataConfig  # noqa: E402
from cnn_compress.data.dataset import calibration_batch, prepare  # noqa: E402
from cnn_compress.data.evaluation import predict_logits, score  # noqa: E402
from cnn_compress.export.config import ExportConfig  # noqa: E402
from cnn_compress.export.exporters import export_all  # noqa: E402
from cnn_compress.measure.benchmark import machine_info, percentile, time_predict  # noqa: E402
from cnn_compress.measure.compression import compress_artifact  # noqa: E402
from cnn_compress.models.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from cnn_compress.models.zoo import build_model, count_macs  # noqa: E402
from cnn_compress.prune.config import PruneConfig  # noqa: E402
from cnn_compress.prune.pruning import PruneContext, prune_model  # noqa: E402
from cnn_compress.quantize.config import QuantizeConfig  # noqa: E402
from cnn_compress.quantize.formats import QuantContext, quantize_all  # noqa: E402
from cnn_compress.runtimes import trt_engine  # noqa: E402
from cnn_compress.runtimes.runners import load_runner  # noqa: E402
from cnn_compress.train.config import FinetuneConfig, TrainConfig  # noqa: E402
from cnn_compress.train.loop import setup_torch, train_model  # noqa: E402


def build_variants(tmp: Path, epochs: int, ft_epochs: int, ratio: float, threads: int) -> tuple[dict[str, Path], object]:
    """Train, prune, fine-tune, quantize and export; returns variant name -> artifact path."""
    ds = prepare(DataConfig(), tmp / "data")
    setup_torch(0, max(2, threads))  # training uses the cores; timing below uses --threads
    model = build_model("resnet18", num_classes=ds.num_classes)
    train_model(model, ds, TrainConfig(epochs=epochs, lr=0.05, device="cpu"))
    base = Checkpoint(model, "resnet18", {"num_classes": ds.num_classes}, ds.class_names, ds.mean, ds.std,
                      tuple(ds.images.shape[1:]))
    calib = calibration_batch(ds, 16)
    ctx = PruneContext(calib[:16], torch.zeros(16, dtype=torch.long), "fc")
    pruned = prune_model(copy.deepcopy(model), PruneConfig(method="structured", ratio=ratio), ctx)
    train_model(pruned, ds, dataclasses.replace(FinetuneConfig(device="cpu"), epochs=ft_epochs, lr=0.02))
    small = base.derive(pruned, "prune", {"method": "structured", "ratio": ratio})
    paths: dict[str, Path] = {}
    for tag, ckpt in (("", base), (f"s{int(ratio * 100)}_", small)):
        d = tmp / (tag or "dense")
        d.mkdir()
        save_checkpoint(d / "fp32.pt", ckpt)
        formats = ("onnx", "ort_int8") + (("tensorrt_fp32", "tensorrt_fp16", "tensorrt_int8") if trt_engine.unavailable() is None else ())
        files = export_all(ckpt, calib, d, ExportConfig(formats=formats))
        quantize_all(ckpt, parse_section(QuantizeConfig, {"formats": ["int8_static"]}), QuantContext(calib), d)
        paths |= {f"{tag}fp32_eager": d / "fp32.pt", f"{tag}int8_static": d / "int8_static.pt2"}
        paths |= {f"{tag}{name}": d / file for name, file in files.items()}
    return paths, ds


def measure(name: str, path: Path, ds, threads: int, repeats: int, compile_: bool, tmp: Path) -> dict:
    runner = load_runner(path, threads, (1, 64) if compile_ else ())
    images, labels = ds.split("test")
    top1 = score(predict_logits(runner.predict, images, ds.mean, ds.std, 64), labels)["top1"]
    x1, x64 = torch.randn(1, 3, 32, 32), torch.randn(64, 3, 32, 32)
    cuda = runner.device == "cuda"
    b1 = time_predict(runner.predict, x1, 10, repeats, cuda_events=cuda)
    b64 = time_predict(runner.predict, x64, 3, max(5, repeats // 4), cuda_events=cuda)
    size = compress_artifact(path, tmp / f"{name}.ccz")["size_compressed_bytes"]
    return {"name": name + ("+compile" if compile_ else ""), "runtime": runner.runtime, "top1": top1,
            "bytes": path.stat().st_size, "ccz": size, "b1": statistics.median(b1), "b1_p90": percentile(b1, 90),
            "ips": 64000.0 / statistics.median(b64)}


def ort_profile(path: Path, threads: int, runs: int = 200) -> list[tuple[str, float]]:
    """Where an ONNX Runtime model spends batch-1 time: share of node time per op type."""
    import json

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.enable_profiling = threads, 1, True
    opts.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = {session.get_inputs()[0].name: torch.randn(1, 3, 32, 32).numpy()}
    for _ in range(runs):
        session.run(None, x)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] = per_op.get(e["args"]["op_name"], 0.0) + e["dur"]
    total = sum(per_op.values())
    return [(op, 100.0 * t / total) for op, t in sorted(per_op.items(), key=lambda kv: -kv[1])] + [
        ("(node time per run, ms)", total / runs / 1000.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--ft-epochs", type=int, default=6, help="fine-tuning epochs of the pruned model")
    parser.add_argument("--ratio", type=float, default=0.6)
    parser.add_argument("--compile", action="store_true", help="also time PyTorch artifacts under torch.compile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths, ds = build_variants(tmp, args.epochs, args.ft_epochs, args.ratio, args.threads)
        rows = []
        for name, path in paths.items():
            rows.append(measure(name, path, ds, args.threads, args.repeats, False, tmp))
            if args.compile and path.suffix in (".pt", ".pt2"):
                rows.append(measure(name, path, ds, args.threads, args.repeats, True, tmp))
        macs = {tag: count_macs(load_runner(paths[f"{tag}fp32_eager"]).module, (3, 32, 32))
                for tag in ("", f"s{int(args.ratio * 100)}_")}
        tag = f"s{int(args.ratio * 100)}_"
        profiles = {name: ort_profile(paths[name], args.threads) for name in (f"{tag}onnx", f"{tag}ort_int8")}
    base = rows[0]
    print(f"# deploy benchmark: ResNet-18 (CIFAR stem), {args.epochs} epochs on digits, structured {args.ratio:.0%} "
          f"+ {args.ft_epochs} fine-tuning epochs "
          f"(MACs {macs[''] / 1e6:.1f}M -> {list(macs.values())[1] / 1e6:.1f}M)")
    print("| artifact | runtime | top-1 % | size MiB | compressed MiB | smaller (disk / compressed) | b1 ms (p90) | "
          "speedup b1 | img/s b64 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['runtime']} | {r['top1']:.2f} | {r['bytes'] / 2**20:.2f} | {r['ccz'] / 2**20:.2f} | "
              f"{base['bytes'] / r['bytes']:.1f}x / {base['bytes'] / r['ccz']:.1f}x | {r['b1']:.3f} ({r['b1_p90']:.3f}) | "
              f"{base['b1'] / r['b1']:.2f}x | {r['ips']:.0f} |")
    best = max(rows[1:], key=lambda r: base["b1"] / r["b1"])
    print(f"\nfastest: {best['name']}: {base['b1'] / best['b1']:.1f}x faster at batch 1 (goal 25x), "
          f"{base['bytes'] / best['bytes']:.1f}x smaller on disk, {base['bytes'] / best['ccz']:.1f}x compressed "
          f"(goal 25x), top-1 {best['top1'] - base['top1']:+.2f} points vs FP32 eager")
    for name, prof in profiles.items():
        top = ", ".join(f"{op} {share:.0f}%" for op, share in prof[:-1][:6])
        print(f"where {name}'s batch-1 time goes (ONNX Runtime profile): {top}; node time {prof[-1][1]:.3f} ms/run")
    m = machine_info(args.threads)
    print(f"machine: {m['cpu']}, {m['threads']} thread(s), INT8 flags {', '.join(m['int8_flags'])}, torch {m['torch']}, "
          f"onnxruntime {m['onnxruntime']}, tensorrt {m['tensorrt']}, GPU {m['cuda']}; TensorRT rows: "
          f"{'yes' if trt_engine.unavailable() is None else 'skipped (' + str(trt_engine.unavailable()) + ')'}")


if __name__ == "__main__":
    main()
