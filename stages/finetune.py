"""finetune: recover accuracy, keeping pruned weights at zero -> models/finetuned.pt."""
from cnn_compress import atomic
from cnn_compress.checkpoint import load_checkpoint, save_checkpoint
from cnn_compress.config import FinetuneConfig, load_section, to_dict
from cnn_compress.data import load_dataset
from cnn_compress.errors import cli
from cnn_compress.pruning import global_sparsity, sparsity_masks
from cnn_compress.training import evaluate, is_writer, setup_torch, train_model


@cli
def main() -> None:
    cfg = load_section(FinetuneConfig)
    ds = load_dataset("data/prepared")
    ckpt = load_checkpoint("models/pruned.pt")
    setup_torch(cfg.seed, cfg.threads)
    model = ckpt.model
    history = train_model(model, ds, cfg, masks=sparsity_masks(model))
    if not is_writer():  # under torchrun only rank 0 writes
        return
    save_checkpoint("models/finetuned.pt", ckpt.derive(model, "finetune", to_dict(cfg)))
    test = evaluate(model, ds, "test")
    atomic.write_json("metrics/finetune.json", test | {"sparsity": global_sparsity(model)})
    atomic.write_csv("plots/finetune_curve.csv", history)
    print(f"finetuned: test top-1 {test['top1']:.2f}%, sparsity {global_sparsity(model):.2f}%")


if __name__ == "__main__":
    main()
