"""finetune: recover accuracy, keeping pruned weights at zero -> <dir>/models/finetuned.pt."""
from cnn_compress import atomic
from cnn_compress.checkpoint import load_checkpoint, save_checkpoint
from cnn_compress.config import FinetuneConfig, load_section, stage_args, to_dict
from cnn_compress.data import load_dataset
from cnn_compress.errors import cli
from cnn_compress.pruning import global_sparsity, pruned_ratio, sparsity_masks
from cnn_compress.training import evaluate, is_writer, setup_torch, train_model


@cli
def main() -> None:
    out = stage_args().dir
    ds = load_dataset("data/prepared")
    ckpt = load_checkpoint(out / "models/pruned.pt")
    cfg = load_section(FinetuneConfig).for_ratio(pruned_ratio(ckpt.history))  # finetune.by_ratio
    setup_torch(cfg.seed, cfg.threads)
    model = ckpt.model
    history = train_model(model, ds, cfg, masks=sparsity_masks(model))
    if not is_writer():  # under torchrun only rank 0 writes
        return
    save_checkpoint(out / "models/finetuned.pt", ckpt.derive(model, "finetune", to_dict(cfg)))
    test = evaluate(model, ds, "test")
    atomic.write_json(out / "metrics/finetune.json", test | {"sparsity": global_sparsity(model),
                                                             "epochs": cfg.epochs, "lr": cfg.lr})
    atomic.write_csv(out / "plots/finetune_curve.csv", history)
    print(f"finetuned ({cfg.epochs} epochs, lr {cfg.lr}): test top-1 {test['top1']:.2f}%, "
          f"sparsity {global_sparsity(model):.2f}%")


if __name__ == "__main__":
    main()
