"""train: the baseline model -> models/baseline.pt, metrics/train.json, plots/train_curve.csv."""
from cnn_compress import atomic
from cnn_compress.checkpoint import Checkpoint, save_checkpoint
from cnn_compress.config import ModelConfig, TrainConfig, load_section, read_params, to_dict
from cnn_compress.data import load_dataset
from cnn_compress.errors import cli
from cnn_compress.models import build_model
from cnn_compress.training import evaluate, setup_torch, train_model


@cli
def main() -> None:
    params = read_params()
    model_cfg, cfg = load_section(ModelConfig, params), load_section(TrainConfig, params)
    ds = load_dataset("data/prepared")
    setup_torch(cfg.seed, cfg.threads)
    args = {"num_classes": ds.num_classes, "width": model_cfg.width}
    model = build_model(model_cfg.arch, **args)
    history = train_model(model, ds, cfg)
    config = {"model": to_dict(model_cfg), "train": to_dict(cfg)}
    ckpt = Checkpoint(model, model_cfg.arch, args, ds.class_names, ds.mean, ds.std,
                      tuple(ds.images.shape[1:]), history=[{"stage": "train", "config": config}])
    save_checkpoint("models/baseline.pt", ckpt)
    test = evaluate(model, ds, "test")
    atomic.write_json("metrics/train.json", test | {"epochs": cfg.epochs})
    atomic.write_csv("plots/train_curve.csv", history)
    print(f"baseline {model_cfg.arch}: test top-1 {test['top1']:.2f}%")


if __name__ == "__main__":
    main()
