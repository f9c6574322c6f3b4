"""sensitivity: how much accuracy each layer loses when only it is pruned, or only it is quantized.

Reads: params.yaml sensitivity.* (ratios, bits, split, images), models/baseline.pt, data/prepared.
Writes: sensitivity/sensitivity.json (the table the variants stage allocates from),
sensitivity/heatmap.png (layers x settings), metrics/sensitivity.json (the most sensitive layers),
plots/sensitivity.csv (points lost per layer and setting). With empty ratios and bits (the
default) the table is empty and nothing is measured.
"""
from pathlib import Path

from cnn_compress.core import atomic
from cnn_compress.core.config import load_section
from cnn_compress.core.errors import cli
from cnn_compress.core.stage import BASELINE, PREPARED, parse_args
from cnn_compress.data.dataset import load_dataset
from cnn_compress.models.checkpoint import load_checkpoint
from cnn_compress.sensitivity import report
from cnn_compress.sensitivity.analyze import analyze, empty_table
from cnn_compress.sensitivity.config import SensitivityConfig
from cnn_compress.train.loop import setup_torch

OUT = Path("sensitivity")


@cli
def main() -> None:
    parse_args(__doc__, variant=False)
    cfg = load_section(SensitivityConfig)
    setup_torch(0, cfg.threads)
    table = analyze(load_checkpoint(BASELINE), load_dataset(PREPARED), cfg) if cfg.enabled else empty_table(cfg)
    atomic.write_json(OUT / "sensitivity.json", table)
    report.heatmap(table, OUT / "heatmap.png")
    # switched off: no keys, so `dvc metrics show` gains no columns for a stage that measured nothing
    atomic.write_json(Path("metrics/sensitivity.json"), report.metrics(table) if table["layers"] else {})
    atomic.write_csv(Path("plots/sensitivity.csv"), report.csv_rows(table) or [report.EMPTY_ROW])
    summary = report.metrics(table)
    if table["layers"]:
        print(f"sensitivity: {summary['layers']} layers on {table['images']} {table['split']} images "
              f"(reference {table['baseline_top1']:.2f}%); most sensitive to pruning: "
              f"{summary['most_sensitive_prune']['layer']}, to quantization: {summary['most_sensitive_bits']['layer']}")
    else:
        print("sensitivity: off (sensitivity.ratios and sensitivity.bits are empty)")


if __name__ == "__main__":
    main()
