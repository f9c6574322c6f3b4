"""finetune: recover accuracy for one variant, keeping pruned weights at zero.

Reads: configs/<variant>/finetune.json, variants/<variant>/pruned.pt, data/prepared (and the
teacher, models/baseline.pt by default, when finetune.distill.weight > 0).
Writes: variants/<variant>/finetuned.pt, variants/<variant>/finetune.json (test accuracy, epochs,
lr, amp, distillation weight, training images/s: the one figure that differs between re-runs),
variants/<variant>/finetune_curve.csv.
"""
from cnn_compress.core import atomic
from cnn_compress.core.config import load_resolved, to_dict
from cnn_compress.core.errors import cli
from cnn_compress.core.stage import PREPARED, variant_paths
from cnn_compress.data.dataset import load_dataset
from cnn_compress.models.checkpoint import load_checkpoint, save_checkpoint
from cnn_compress.prune.pruning import global_sparsity, pruned_ratio, sparsity_masks
from cnn_compress.train.config import FinetuneConfig
from cnn_compress.train.distill import load_teacher
from cnn_compress.train.loop import evaluate, images_per_s, is_writer, setup_torch, train_model


@cli
def main() -> None:
    paths = variant_paths(__doc__)
    (cfg,) = load_resolved(paths.config("finetune"), FinetuneConfig)
    ds = load_dataset(PREPARED)
    ckpt = load_checkpoint(paths.pruned)
    cfg = cfg.for_ratio(pruned_ratio(ckpt.history))  # finetune.by_ratio
    setup_torch(cfg.seed, cfg.threads)
    model = ckpt.model
    speed: dict[str, float] = {}
    history = train_model(model, ds, cfg, masks=sparsity_masks(model), resume=paths.finetuned,
                          teacher=load_teacher(cfg.distill, ds), stats=speed)
    if not is_writer():  # under torchrun only rank 0 writes
        return
    save_checkpoint(paths.finetuned, ckpt.derive(model, "finetune", to_dict(cfg)))
    test = evaluate(model, ds, "test")
    atomic.write_json(paths.root / "finetune.json", test | {
        "sparsity": global_sparsity(model), "epochs": cfg.epochs, "lr": cfg.lr, "amp": cfg.amp,
        "distill_weight": cfg.distill.weight, "train_images_per_s": images_per_s(speed)})
    atomic.write_csv(paths.root / "finetune_curve.csv", history)
    print(f"{paths.name}: finetuned ({cfg.epochs} epochs, lr {cfg.lr}): test top-1 {test['top1']:.2f}%, "
          f"sparsity {global_sparsity(model):.2f}%")


if __name__ == "__main__":
    main()
