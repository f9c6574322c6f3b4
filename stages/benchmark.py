"""benchmark: every variant -> <dir>/metrics/benchmark.json, plots/benchmark.csv, models/compressed/."""
from pathlib import Path

from cnn_compress import atomic
from cnn_compress.benchmark import run_benchmark
from cnn_compress.config import BenchmarkConfig, load_section, stage_args
from cnn_compress.data import load_dataset
from cnn_compress.errors import cli


@cli
def main() -> None:
    args = stage_args()
    root, cfg = args.dir, load_section(BenchmarkConfig)
    ds = load_dataset("data/prepared")
    baseline = None if args.branch else Path("models/baseline.pt")  # a sweep branch shares the main one
    result = run_benchmark(root / "models", ds, cfg, compressed_dir=root / "models/compressed", baseline=baseline,
                           branch=args.branch)
    atomic.write_json(root / "metrics/benchmark.json", result)
    atomic.write_csv(root / "plots/benchmark.csv", [{"variant": k} | v for k, v in result["variants"].items()])
    for name, v in result["variants"].items():
        print(f"{name:>14}: top-1 {v['top1']:6.2f}%  {v['size_bytes'] / 1024:8.1f} KiB "
              f"({v['size_compressed_bytes'] / 1024:7.1f} KiB compressed)  "
              f"{v[f'latency_ms_b{cfg.batch_sizes[0]}_median']:.2f} ms  ({v['runtime']})")


if __name__ == "__main__":
    main()
