"""quantize: one artifact per quantize.formats entry -> models/quantized/."""
from pathlib import Path

from cnn_compress.checkpoint import load_checkpoint
from cnn_compress.config import QuantizeConfig, load_section
from cnn_compress.data import calibration_batch, load_dataset
from cnn_compress.errors import cli
from cnn_compress.quantization import check_formats, quantize_all


@cli
def main() -> None:
    cfg = load_section(QuantizeConfig)
    check_formats(cfg.formats)
    ds = load_dataset("data/prepared")
    ckpt = load_checkpoint("models/finetuned.pt")
    calib = calibration_batch(ds, cfg.calib_per_class)
    manifest = quantize_all(ckpt, cfg.formats, calib, Path("models/quantized"))
    print(f"quantized into {', '.join(manifest)} ({len(calib)} calibration images)")


if __name__ == "__main__":
    main()
