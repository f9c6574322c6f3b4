"""Does pruning make ResNet-18 (CIFAR) faster on CPU? Unstructured vs structured, one run.

For ratios 0.3 / 0.5 / 0.7 and both methods (global L1 unstructured; structured global L1 channel
pruning through torch-pruning), prints params (nonzero), MACs, the saved checkpoint's bytes,
PyTorch eager CPU latency at batch 1 (median and p90) and throughput at batch 64, each against
the unpruned model measured in the same run, with the MACs ratio beside the measured speedup.
Random weights: speed and size do not depend on accuracy (the pipeline measures accuracy).

    python bench/prune.py [--threads 2] [--repeats 30]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from cnn_compress.measure.benchmark import machine_info, percentile, time_predict  # noqa: E402
from cnn_compress.models.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from cnn_compress.models.zoo import build_model, count_macs, count_params  # noqa: E402
from cnn_compress.prune.config import PruneConfig  # noqa: E402
from cnn_compress.prune.pruning import PruneContext, prune_model  # noqa: E402


def measure(model: torch.nn.Module, repeats: int, tmp: Path) -> dict[str, float]:
    model.eval()
    path = tmp / "m.pt"
    save_checkpoint(path, Checkpoint(model, "resnet18", {"num_classes": 10}, [str(i) for i in range(10)],
                                     (0.5,) * 3, (0.25,) * 3, (3, 32, 32)))
    b1 = time_predict(model, torch.randn(1, 3, 32, 32), 5, repeats)
    b64 = time_predict(model, torch.randn(64, 3, 32, 32), 3, max(5, repeats // 2))
    return {"nonzero": count_params(model)[1], "macs": count_macs(model, (3, 32, 32)),
            "bytes": path.stat().st_size, "b1": statistics.median(b1), "b1_p90": percentile(b1, 90),
            "ips": 64000.0 / statistics.median(b64)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        base = measure(build_model("resnet18", num_classes=10), args.repeats, Path(tmp))
        rows.append(("unpruned", 0.0, base))
        for ratio in args.ratios:
            for method in ("l1_unstructured", "structured"):
                torch.manual_seed(0)
                model = build_model("resnet18", num_classes=10).eval()
                prune_model(model, PruneConfig(method=method, ratio=ratio), PruneContext.random("fc"))
                rows.append((method, ratio, measure(model, args.repeats, Path(tmp))))
    print(f"# bench/prune.py: ResNet-18 (CIFAR stem), 3x32x32, PyTorch eager CPU, {args.threads} threads, "
          f"median of {args.repeats} runs at batch 1")
    print(f"# machine: {machine_info(args.threads)}")
    print("| method | ratio | nonzero params | MACs (M) | MACs ratio | size (MiB) | b1 ms (median / p90) "
          "| speedup b1 | img/s b64 | speedup b64 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method, ratio, r in rows:
        print(f"| {method} | {ratio:.1f} | {r['nonzero']:,} | {r['macs'] / 1e6:.1f} | {r['macs'] / base['macs']:.3f} "
              f"| {r['bytes'] / 2**20:.1f} | {r['b1']:.2f} / {r['b1_p90']:.2f} | {base['b1'] / r['b1']:.2f}x "
              f"| {r['ips']:.0f} | {r['ips'] / base['ips']:.2f}x |")


if __name__ == "__main__":
    main()
