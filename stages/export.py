"""export: deployable artifacts checked against PyTorch -> <dir>/models/exported/, metrics/export.json."""
from cnn_compress import atomic
from cnn_compress.checkpoint import load_checkpoint
from cnn_compress.config import ExportConfig, branch_formats, load_section, stage_args
from cnn_compress.data import calibration_batch, load_dataset
from cnn_compress.errors import cli
from cnn_compress.export import check_formats, export_all, verify


@cli
def main() -> None:
    args = stage_args()
    root, out = args.dir, args.dir / "models/exported"
    cfg, key = branch_formats(load_section(ExportConfig), args.branch)
    check_formats(cfg.formats, key)
    ds = load_dataset("data/prepared")
    ckpt = load_checkpoint(root / "models/finetuned.pt")
    files = export_all(ckpt, calibration_batch(ds, cfg.calib_per_class), out, cfg)
    atomic.write_json(out / "manifest.json", {name: {"file": f} for name, f in files.items()})
    checks = verify(ckpt.model, files, out, ds)
    atomic.write_json(root / "metrics/export.json", checks)
    for name, c in checks.items():
        print(f"{name}: top-1 agreement {c['top1_agreement']:.2f}%, max |diff| {c['max_abs_diff']:.4g}")


if __name__ == "__main__":
    main()
