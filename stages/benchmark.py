"""benchmark: measure every artifact of one variant the same way.

Reads: configs/<variant>/benchmark.json, variants/<variant>/{pruned,finetuned}.pt, quantized/,
exported/, data/prepared.
Writes: metrics/<variant>/<artifact>.json (accuracy, sparsity, params, MACs, sizes: they change only
when the artifact does), timings/<variant>/<artifact>.json (latency, throughput: new on every run),
variants/<variant>/benchmark.json (every figure, the machine and versions),
variants/<variant>/benchmark.csv, variants/<variant>/compressed/ (true compressed weights).
"""
import shutil
from pathlib import Path

from cnn_compress.core import atomic
from cnn_compress.core.config import load_resolved
from cnn_compress.core.errors import cli
from cnn_compress.core.stage import PREPARED, variant_paths
from cnn_compress.data.dataset import load_dataset
from cnn_compress.measure.benchmark import collect_artifacts, headline, run_benchmark, timing_headline
from cnn_compress.measure.config import BenchmarkConfig


@cli
def main() -> None:
    paths = variant_paths(__doc__)
    (cfg,) = load_resolved(paths.config("benchmark"), BenchmarkConfig)
    ds = load_dataset(PREPARED)
    result = run_benchmark(collect_artifacts(paths.root, check_files=True), ds, cfg, paths.compressed, fallback=paths.finetuned)
    atomic.write_json(paths.root / "benchmark.json", {"variant": paths.name} | result)
    rows = result["artifacts"]
    atomic.write_csv(paths.root / "benchmark.csv", [{"artifact": k} | v for k, v in rows.items()])
    timings = Path("timings") / paths.name
    for folder in (paths.metrics, timings):
        shutil.rmtree(folder, ignore_errors=True)
    for name, row in rows.items():
        atomic.write_json(paths.metrics / f"{name}.json", headline(row))
        atomic.write_json(timings / f"{name}.json", timing_headline(row, cfg.batch_sizes))
    b = min(cfg.batch_sizes)
    for name, v in rows.items():
        print(f"{paths.name}/{name:>14}: top-1 {v['top1']:6.2f}%  sparsity {v['sparsity']:5.1f}%  "
              f"{v['size_compressed_bytes'] / 1024:8.1f} KiB compressed  {v[f'latency_ms_b{b}_median']:.2f} ms  "
              f"({v['runtime']})")


if __name__ == "__main__":
    main()
