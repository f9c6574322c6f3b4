"""quantize: one artifact per quantize.formats entry -> <dir>/models/quantized/.

With ``prune.order: after_quantize`` each artifact's quantized weights are pruned here (the prune
stage then passes the baseline through unchanged).
"""
from cnn_compress.checkpoint import load_checkpoint
from cnn_compress.config import (
    FinetuneConfig,
    PruneConfig,
    QuantizeConfig,
    branch_formats,
    load_section,
    read_params,
    stage_args,
)
from cnn_compress.data import calibration_batch, load_dataset
from cnn_compress.errors import cli
from cnn_compress.quantization import QuantContext, check_formats, check_prune_after, quantize_all
from cnn_compress.training import setup_torch


@cli
def main() -> None:
    args, params = stage_args(), read_params()
    out = args.dir
    cfg, key = branch_formats(load_section(QuantizeConfig, params), args.branch)
    finetune, prune = load_section(FinetuneConfig, params), load_section(PruneConfig, params)
    check_formats(cfg.formats, key)
    check_prune_after(cfg.formats, prune)
    ds = load_dataset("data/prepared")
    ckpt = load_checkpoint(out / "models/finetuned.pt")
    setup_torch(finetune.seed, finetune.threads)  # QAT and fixed<N> fine-tuning are seeded like finetune
    calib = calibration_batch(ds, cfg.calib_per_class)
    ctx = QuantContext(cfg, calib, ds, finetune, prune)
    manifest = quantize_all(ckpt, cfg.formats, calib, out / "models/quantized", ctx)
    print(f"quantized into {', '.join(manifest)} ({len(calib)} calibration images)")


if __name__ == "__main__":
    main()
