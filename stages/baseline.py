"""baseline: measure the trained model the way every variant's artifacts are measured.

Reads: params.yaml benchmark.* (the base section), models/baseline.pt, data/prepared.
Writes: metrics/baseline.json (key figures), models/baseline.json (every figure, the machine),
models/baseline.ccz (true compressed weights).
"""
from pathlib import Path

from cnn_compress.core import atomic
from cnn_compress.core.config import load_section
from cnn_compress.core.errors import cli
from cnn_compress.core.stage import BASELINE, PREPARED, parse_args
from cnn_compress.data.dataset import load_dataset
from cnn_compress.measure.benchmark import headline, run_benchmark
from cnn_compress.measure.config import BenchmarkConfig


@cli
def main() -> None:
    parse_args(__doc__, variant=False)
    cfg = load_section(BenchmarkConfig)
    result = run_benchmark([("baseline", BASELINE, "trained model")], load_dataset(PREPARED), cfg,
                           compressed_dir=BASELINE.parent)
    result.pop("skipped", None)  # benchmark.compile names the variants' artifacts, not this one
    row = result["artifacts"]["baseline"]
    atomic.write_json(Path("models/baseline.json"), result)
    atomic.write_json(Path("metrics/baseline.json"), headline(row, cfg.batch_sizes))
    print(f"baseline: top-1 {row['top1']:.2f}%, {row['size_compressed_bytes'] / 1024:.1f} KiB compressed, "
          f"{row[f'latency_ms_b{min(cfg.batch_sizes)}_median']:.2f} ms")


if __name__ == "__main__":
    main()
