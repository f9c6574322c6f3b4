"""prune: prune the baseline -> models/pruned.pt, metrics/prune.json, plots/sparsity.csv."""
from cnn_compress import atomic
from cnn_compress.checkpoint import load_checkpoint, save_checkpoint
from cnn_compress.config import PruneConfig, load_section, to_dict
from cnn_compress.errors import cli
from cnn_compress.models import count_params
from cnn_compress.pruning import global_sparsity, layer_sparsity, prune_model


@cli
def main() -> None:
    cfg = load_section(PruneConfig)
    ckpt = load_checkpoint("models/baseline.pt")
    model = prune_model(ckpt.model, cfg)
    save_checkpoint("models/pruned.pt", ckpt.derive(model, "prune", to_dict(cfg)))
    total, nonzero = count_params(model)
    sparsity = global_sparsity(model)
    atomic.write_json("metrics/prune.json", {"sparsity": sparsity, "params": total, "params_nonzero": nonzero})
    atomic.write_csv("plots/sparsity.csv", layer_sparsity(model))
    print(f"pruned ({cfg.method}, {cfg.scope}, ratio {cfg.ratio}): sparsity {sparsity:.2f}%")


if __name__ == "__main__":
    main()
