"""quantize: one artifact per quantize.formats entry of one variant.

Reads: configs/<variant>/quantize.json (quantize; finetune when a format trains; prune with
prune.order: after_quantize), variants/<variant>/finetuned.pt, data/prepared.
Writes: variants/<variant>/quantized/ (one file per format + manifest.json). With
after_quantize each artifact's own weights are pruned right after it is built.
"""
import functools

from cnn_compress.core.config import load_resolved
from cnn_compress.core.errors import cli
from cnn_compress.core.stage import PREPARED, variant_paths
from cnn_compress.data.dataset import calibration_batch, load_dataset
from cnn_compress.models.checkpoint import load_checkpoint
from cnn_compress.prune import after_quantize
from cnn_compress.prune.config import PruneConfig
from cnn_compress.quantize.config import QuantizeConfig
from cnn_compress.quantize.formats import QuantContext, check_formats, quantize_all
from cnn_compress.train.config import FinetuneConfig
from cnn_compress.train.distill import load_teacher
from cnn_compress.train.loop import setup_torch


@cli
def main() -> None:
    paths = variant_paths(__doc__)
    cfg, finetune, prune = load_resolved(paths.config("quantize"), QuantizeConfig, FinetuneConfig, PruneConfig)
    check_formats(cfg)
    transform = None
    if prune is not None and after_quantize.active(prune):
        after_quantize.check({name: fmt.TYPE for name, fmt in cfg.formats})
        transform = functools.partial(after_quantize.prune_artifact, cfg=prune)
    ds = load_dataset(PREPARED)
    ckpt = load_checkpoint(paths.finetuned)
    finetune = finetune or FinetuneConfig()
    setup_torch(finetune.seed, finetune.threads)  # QAT and fixed<N> fine-tuning are seeded like finetune
    calib = calibration_batch(ds, cfg.calib_per_class)
    manifest = quantize_all(ckpt, cfg, QuantContext(calib, ds, finetune, load_teacher(finetune.distill, ds)), paths.quantized, transform)
    print(f"{paths.name}: quantized into {', '.join(manifest)} ({len(calib)} calibration images)")


if __name__ == "__main__":
    main()
