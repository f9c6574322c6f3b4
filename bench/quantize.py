"""Quantization study: fixed-point accuracy at 8..2 bits, and every INT8 path against FP32.

Table 1: top-1 of ``fixed<N>`` (weights and activations, per-channel weights) for N = 8..2,
symmetric vs asymmetric, without and with straight-through fine-tuning.
Table 2: FP32, FP16 and every INT8 path side by side, measured in the same run: top-1, on-disk
size, true compressed size, CPU latency at batch 1 (median, p90) and the ratio to FP32 eager.

Model and data: the shared ResNet-20 checkpoint on the shared CIFAR-10 JPEG archive (test images
balanced per class; fine-tuning and calibration on the train split). When either file is absent
it says so and falls back to a ResNet-20 trained on the default data (digits).

    python bench/quantize.py [--test-per-class 500] [--train-per-class 200] [--ft-epochs 1] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from cnn_compress.core.config import parse_section  # noqa: E402
from cnn_compress.data.config import DataConfig  # noqa: E402
from cnn_compress.data.dataset import Dataset, calibration_batch, prepare  # noqa: E402
from cnn_compress.data.evaluation import predict_logits, score  # noqa: E402
from cnn_compress.data.sources import read_imagefolder  # noqa: E402
from cnn_compress.export.config import ExportConfig  # noqa: E402
from cnn_compress.export.exporters import export_all  # noqa: E402
from cnn_compress.measure.benchmark import machine_info, percentile, time_predict  # noqa: E402
from cnn_compress.measure.compression import compress_artifact  # noqa: E402
from cnn_compress.models.checkpoint import Checkpoint, load_pretrained, save_checkpoint  # noqa: E402
from cnn_compress.models.zoo import build_model  # noqa: E402
from cnn_compress.quantize.config import FixedConfig, QuantizeConfig  # noqa: E402
from cnn_compress.quantize.formats import QuantContext, fixed_point, quantize_all  # noqa: E402
from cnn_compress.runtimes.runners import load_runner  # noqa: E402
from cnn_compress.train.config import FinetuneConfig, TrainConfig  # noqa: E402
from cnn_compress.train.loop import setup_torch, train_model  # noqa: E402

SHARED = Path(os.environ.get("CNN_COMPRESS_SHARED", ROOT.parent / "shared"))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # the akamaster checkpoints' normalisation


def shared_setup(train_pc: int, test_pc: int) -> tuple[Checkpoint, Dataset, str] | None:
    archive, weights = SHARED / "data/cifar10-jpeg.tar.gz", SHARED / "weights/resnet20-cifar10-akamaster.th"
    if not (archive.exists() and weights.exists()):
        print(f"note: shared CIFAR-10 archive or ResNet-20 weights not under {SHARED}; using the default data")
        return None
    train = read_imagefolder(archive, per_class=train_pc, splits=("train",))
    test = read_imagefolder(archive, per_class=test_pc, splits=("test",))
    n = len(train.labels)
    ds = Dataset(torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels]), train.class_names,
                 {"train": torch.arange(n), "val": torch.arange(0), "test": torch.arange(n, n + len(test.labels))},
                 *IMAGENET, test.checksum)
    model = build_model("resnet20", num_classes=10)
    load_pretrained(model, weights, "linear", reset_head=False)
    ckpt = Checkpoint(model.eval(), "resnet20", {"num_classes": 10}, ds.class_names, *IMAGENET, (3, 32, 32))
    return ckpt, ds, f"shared ResNet-20 (akamaster) on CIFAR-10 JPEG, {test_pc}/class test, {train_pc}/class train"


def digits_setup(tmp: Path) -> tuple[Checkpoint, Dataset, str]:
    ds = prepare(DataConfig(), tmp / "digits")
    model = build_model("resnet20", num_classes=ds.num_classes)
    train_model(model, ds, TrainConfig(device="cpu"))
    ckpt = Checkpoint(model.eval(), "resnet20", {"num_classes": 10}, ds.class_names, ds.mean, ds.std, (3, 32, 32))
    return ckpt, ds, "ResNet-20 trained 15 epochs on digits (default data)"


def top1(predict, ds: Dataset) -> float:
    images, labels = ds.split("test")
    return score(predict_logits(predict, images, ds.mean, ds.std, 250), labels)["top1"]


def fixed_table(ckpt: Checkpoint, ds: Dataset, calib: torch.Tensor, ft: FinetuneConfig, epochs: int) -> None:
    ref = top1(ckpt.model, ds)
    tuned = copy.deepcopy(ckpt.model)
    torch.manual_seed(0)
    train_model(tuned, ds, dataclasses.replace(ft, epochs=epochs))
    print(f"\nFP32 reference: {ref:.2f}%; FP32 after the same fine-tuning (no quantizers): {top1(tuned, ds):.2f}%\n")
    print("| bits | symmetric | asymmetric | symmetric + fine-tune | asymmetric + fine-tune |")
    print("|---:|---:|---:|---:|---:|")
    for bits in range(8, 1, -1):
        cells = []
        for epochs_ in (0, epochs):
            for scheme in ("symmetric", "asymmetric"):
                cfg = FixedConfig(bits=bits, scheme=scheme, epochs=epochs_, lr=ft.lr)
                torch.manual_seed(0)
                cells.append(top1(fixed_point(ckpt, cfg, calib, ds, ft).model, ds))
        print(f"| {bits} | " + " | ".join(f"{c:.2f}" for c in cells) + " |", flush=True)


def int8_table(ckpt: Checkpoint, ds: Dataset, calib: torch.Tensor, ft: FinetuneConfig, threads: int, tmp: Path) -> None:
    out = tmp / "artifacts"
    save_checkpoint(out / "fp32.pt", ckpt)
    formats = ("fp16", "int8_dynamic", "int8_static", "int8_mixed", "int8_qat", "fixed8", "fixed4")
    cfg = parse_section(QuantizeConfig, {"formats": list(formats)})
    manifest = quantize_all(ckpt, cfg, QuantContext(calib, ds, ft), out)
    files = {"fp32": "fp32.pt"} | {k: v["file"] for k, v in manifest.items()}
    files |= {f"{k} (onnxruntime)": v for k, v in export_all(ckpt, calib, out, ExportConfig(formats=("onnx", "ort_int8"))).items()}
    rows = []
    for name, file in files.items():
        for compiled in (False, True) if name in ("fp32", "int8_static") else (False,):
            runner = load_runner(out / file, threads, (1, 250) if compiled else ())
            x = calib[:1]
            times = time_predict(runner.predict, x, 10, 100 if name != "fp16" else 10, max_seconds=5.0)
            rows.append((name + (" + torch.compile" if compiled else ""), runner.runtime, top1(runner.predict, ds),
                         (out / file).stat().st_size, compress_artifact(out / file, tmp / "c.ccz")["size_compressed_bytes"],
                         statistics.median(times), percentile(times, 90)))
    base = rows[0]
    print("\n| variant | runtime | top-1 % | size KiB | compressed KiB | b1 ms median (p90) | speedup vs fp32 eager |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, runtime, acc, size, ccz, med, p90 in rows:
        print(f"| {name} | {runtime} | {acc:.2f} | {size / 1024:.1f} | {ccz / 1024:.1f} | {med:.3f} ({p90:.3f}) | "
              f"{base[5] / med:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-per-class", type=int, default=500)
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--ft-epochs", type=int, default=1)
    parser.add_argument("--ft-lr", type=float, default=0.002)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-fixed", action="store_true")
    args = parser.parse_args()
    setup_torch(0, args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ckpt, ds, what = shared_setup(args.train_per_class, args.test_per_class) or digits_setup(tmp)
        print(f"# quantization study: {what}")
        calib = calibration_batch(ds, 32)
        flip = ds.num_classes == 10 and "CIFAR" in what
        ft = FinetuneConfig(epochs=args.ft_epochs, lr=args.ft_lr, crop_pad=4 if flip else 2, flip=flip, device="cpu",
                            threads=args.threads)
        if not args.skip_fixed:
            fixed_table(ckpt, ds, calib, ft, args.ft_epochs)
        int8_table(ckpt, ds, calib, ft, args.threads, tmp)
    m = machine_info(args.threads)
    print(f"\nmachine: {m['cpu']}, {m['threads']} thread(s), INT8 flags {', '.join(m['int8_flags'])}, "
          f"torch {m['torch']}, onnxruntime {m['onnxruntime']}")


if __name__ == "__main__":
    main()
