"""sweep: merge every prune.ratios branch -> metrics/sweep.json, plots/sweep.csv, reports/sweep.md + figure."""
from pathlib import Path

from cnn_compress import atomic, report
from cnn_compress.config import PruneConfig, load_section, read_params
from cnn_compress.errors import UserError, cli


@cli
def main() -> None:
    params = read_params()
    load_section(PruneConfig, params)  # validates prune.ratios
    # directory names as dvc.yaml's matrix renders them: the YAML values as written (0.5, not 0.50)
    names = [str(r) for r in (params.get("prune") or {}).get("ratios") or []]
    branches = {name: Path("sweeps") / name / "metrics/benchmark.json" for name in names}
    missing = [str(p) for p in branches.values() if not p.is_file()]
    if missing:
        raise UserError(f"sweep: branch results missing ({', '.join(missing)}); run `dvc repro`")
    rows = report.sweep_rows(branches, Path("metrics/benchmark.json"))
    atomic.write_json("metrics/sweep.json", {"ratios": [float(n) for n in names],
                                             "branches": {f"{r['ratio']:g}/{r['variant']}": r for r in rows}})
    atomic.write_csv("plots/sweep.csv", rows or [{"ratio": "", "variant": ""}])
    report.sweep_figure(rows, Path("reports/sweep/accuracy_vs_ratio_and_size.png"))
    atomic.write_text("reports/sweep/summary.md", "# Pruning sweep\n\n" + report.sweep_table(rows))
    print(f"merged {len(names)} sweep branch(es): {', '.join(names) or 'none (prune.ratios is empty)'}")


if __name__ == "__main__":
    main()
