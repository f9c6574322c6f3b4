"""prune: prune the baseline for one variant.

Reads: configs/<variant>/prune.json (prune; finetune when it trains between steps),
models/baseline.pt, data/prepared.
Writes: variants/<variant>/pruned.pt, variants/<variant>/prune.json (sparsity, params, MACs),
variants/<variant>/sparsity.csv (per layer). With prune.order: after_quantize the model passes
through unpruned and the quantize stage prunes each artifact.
"""
from cnn_compress.core import atomic
from cnn_compress.core.config import load_resolved
from cnn_compress.core.errors import cli
from cnn_compress.core.stage import BASELINE, PREPARED, variant_paths
from cnn_compress.data.dataset import load_dataset
from cnn_compress.models.checkpoint import load_checkpoint, save_checkpoint
from cnn_compress.prune.config import PruneConfig
from cnn_compress.prune.pruning import PRUNERS, layer_sparsity
from cnn_compress.prune.run import prune_checkpoint
from cnn_compress.train.config import FinetuneConfig


@cli
def main() -> None:
    paths = variant_paths(__doc__)
    cfg, step_cfg = load_resolved(paths.config("prune"), PruneConfig, FinetuneConfig)
    for p in cfg.passes():
        PRUNERS.check(p.method)  # a bad method fails before any loading
    pruned, summary = prune_checkpoint(load_checkpoint(BASELINE), load_dataset(PREPARED), cfg, step_cfg)
    save_checkpoint(paths.pruned, pruned)
    atomic.write_json(paths.root / "prune.json", summary)
    atomic.write_csv(paths.root / "sparsity.csv", layer_sparsity(pruned.model))
    print(f"{paths.name}: pruned ({cfg.label()}, {cfg.scope}, ratio {summary['ratio']}): sparsity "
          f"{summary['sparsity']:.2f}%, {summary['params_nonzero']:,} of {summary['params']:,} params nonzero "
          f"(mparams_nz {summary['params_nonzero'] / 1e6:.4f}), MACs x{summary['macs_ratio']:.3f}")


if __name__ == "__main__":
    main()
