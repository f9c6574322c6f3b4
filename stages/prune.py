"""prune: prune the baseline -> <dir>/models/pruned.pt, metrics/prune.json, plots/sparsity.csv."""
import dataclasses

from cnn_compress import atomic
from cnn_compress.checkpoint import load_checkpoint, save_checkpoint
from cnn_compress.config import FinetuneConfig, PruneConfig, load_section, read_params, stage_args, to_dict
from cnn_compress.data import balanced_subset, load_dataset, normalize
from cnn_compress.errors import cli
from cnn_compress.models import count_macs, count_params, head_name
from cnn_compress.pruning import (
    PRUNERS,
    PruneContext,
    global_sparsity,
    layer_sparsity,
    prune_model,
    sparsity_masks,
    structured_policy,
)
from cnn_compress.training import setup_torch, train_model


@cli
def main() -> None:
    args, params = stage_args(ratio=True), read_params()
    cfg, step_cfg = load_section(PruneConfig, params), load_section(FinetuneConfig, params)
    if args.ratio is not None:  # a sweep branch (dvc.yaml matrix over prune.ratios)
        cfg = dataclasses.replace(cfg, ratio=args.ratio)
    step_cfg = dataclasses.replace(step_cfg, epochs=cfg.step_epochs)
    PRUNERS.check(cfg.method)  # a bad method fails before any loading
    ckpt, ds = load_checkpoint("models/baseline.pt"), load_dataset("data/prepared")
    setup_torch(step_cfg.seed, step_cfg.threads)
    images, labels = ds.split("train")
    pick = balanced_subset(labels, 8)  # traced on these; Taylor importance takes gradients on them
    ctx = PruneContext(normalize(images[pick], ds.mean, ds.std), labels[pick], head_name(ckpt.arch))
    macs_before = count_macs(ckpt.model, ckpt.input_shape)

    def after_step(model, step: int) -> None:  # iterative schedules train between steps
        if cfg.step_epochs:
            train_model(model, ds, step_cfg, masks=sparsity_masks(model))

    policy = structured_policy(ckpt.model) if cfg.method == "structured" else "all"
    if cfg.order == "after_quantize":  # the quantize stage prunes each quantized artifact instead
        policy, cfg = "deferred to quantize (prune.order: after_quantize)", dataclasses.replace(cfg, ratio=0.0)
    model = prune_model(ckpt.model, cfg, ctx, after_step)
    save_checkpoint(args.dir / "models/pruned.pt", ckpt.derive(model, "prune", to_dict(cfg) | {"policy": policy}))
    total, nonzero = count_params(model)
    macs = count_macs(model, ckpt.input_shape)
    atomic.write_json(args.dir / "metrics/prune.json", {
        "sparsity": global_sparsity(model), "params": total, "params_nonzero": nonzero,
        "macs": macs, "macs_ratio": round(macs / macs_before, 4), "policy": policy})
    atomic.write_csv(args.dir / "plots/sparsity.csv", layer_sparsity(model))
    print(f"pruned ({cfg.method}, {cfg.scope}, ratio {cfg.ratio}): sparsity {global_sparsity(model):.2f}%, "
          f"{total} params, MACs x{macs / macs_before:.3f}")


if __name__ == "__main__":
    main()
