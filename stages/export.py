"""export: deployable artifacts checked against PyTorch -> models/exported/, metrics/export.json."""
from pathlib import Path

from cnn_compress import atomic
from cnn_compress.checkpoint import load_checkpoint
from cnn_compress.config import ExportConfig, load_section
from cnn_compress.data import calibration_batch, load_dataset
from cnn_compress.errors import cli
from cnn_compress.export import check_formats, export_all, verify

OUT = Path("models/exported")


@cli
def main() -> None:
    cfg = load_section(ExportConfig)
    check_formats(cfg.formats)
    ds = load_dataset("data/prepared")
    ckpt = load_checkpoint("models/finetuned.pt")
    files = export_all(ckpt, calibration_batch(ds, cfg.calib_per_class), OUT, cfg)
    atomic.write_json(OUT / "manifest.json", {name: {"file": f} for name, f in files.items()})
    checks = verify(ckpt.model, files, OUT, ds)
    atomic.write_json("metrics/export.json", checks)
    for name, c in checks.items():
        print(f"{name}: top-1 agreement {c['top1_agreement']:.2f}%, max |diff| {c['max_abs_diff']:.4g}")


if __name__ == "__main__":
    main()
