"""report: PNG figures -> reports/figures/, summary table -> reports/summary.md."""
import json
from pathlib import Path

from cnn_compress import atomic, report
from cnn_compress.errors import UserError, cli

FIGS = Path("reports/figures")


@cli
def main() -> None:
    try:
        bench = json.loads(Path("metrics/benchmark.json").read_text())
        sparsity = report.read_csv(Path("plots/sparsity.csv"))
        train, finetune = report.read_csv(Path("plots/train_curve.csv")), report.read_csv(Path("plots/finetune_curve.csv"))
    except (OSError, ValueError) as exc:
        raise UserError(f"report: cannot read an input ({exc})") from None
    report.accuracy_vs_size(bench["variants"], FIGS / "accuracy_vs_size.png")
    report.latency(bench["variants"], FIGS / "latency.png")
    report.sparsity(sparsity, FIGS / "sparsity.png")
    report.curves(train, finetune, FIGS / "training_curves.png")
    atomic.write_text("reports/summary.md", "# cnn-compress summary\n\n" + report.summary_table(bench))
    print(f"wrote {len(list(FIGS.glob('*.png')))} figures and reports/summary.md")


if __name__ == "__main__":
    main()
