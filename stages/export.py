"""export: deployable artifacts of one variant, each checked against its PyTorch source.

Reads: configs/<variant>/export.json, variants/<variant>/finetuned.pt, data/prepared.
Writes: variants/<variant>/exported/ (one file per export.formats entry, manifest.json, and
checks.json: top-1 agreement and max |logit difference| against PyTorch on the test split).
"""
from cnn_compress.core import atomic
from cnn_compress.core.config import load_resolved
from cnn_compress.core.errors import cli
from cnn_compress.core.stage import PREPARED, VariantPaths, variant_paths
from cnn_compress.export.config import ExportConfig


@cli
def main() -> None:
    paths = variant_paths(__doc__)
    (cfg,) = load_resolved(paths.config("export"), ExportConfig)
    paths.exported.mkdir(parents=True, exist_ok=True)
    if not cfg.formats:  # nothing to export: an empty manifest, without loading anything
        atomic.write_json(paths.exported / "manifest.json", {})
        print(f"{paths.name}: export.formats is empty, nothing exported")
        return
    export(paths, cfg)


def export(paths: VariantPaths, cfg: ExportConfig) -> None:
    """Imports here: torch and the runtimes take ~3 s to load, which a variant that exports
    nothing (most study variants) need not pay."""
    from cnn_compress.data.dataset import calibration_batch, load_dataset
    from cnn_compress.export.exporters import check_formats, export_all, verify
    from cnn_compress.models.checkpoint import load_checkpoint

    check_formats(cfg.formats)
    out = paths.exported
    ds = load_dataset(PREPARED)
    ckpt = load_checkpoint(paths.finetuned)
    files = export_all(ckpt, calibration_batch(ds, cfg.calib_per_class), out, cfg)
    atomic.write_json(out / "manifest.json", {name: {"file": f} for name, f in files.items()})
    checks = verify(ckpt.model, files, out, ds)
    atomic.write_json(out / "checks.json", checks)
    for name, c in checks.items():
        print(f"{paths.name}: {name}: top-1 agreement {c['top1_agreement']:.2f}%, max |diff| {c['max_abs_diff']:.4g}")


if __name__ == "__main__":
    main()
