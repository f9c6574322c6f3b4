"""train: the baseline model every variant starts from.

Reads: params.yaml model.* and train.*, data/prepared (and model.pretrained when set).
Writes: models/baseline.pt (self-describing checkpoint), metrics/train.json (test top-1 / top-5),
models/train.json (epochs, frozen tensors, world size), plots/train_curve.csv.
"""
from cnn_compress.core import atomic
from cnn_compress.core.config import load_section, read_params, to_dict
from cnn_compress.core.errors import cli
from cnn_compress.core.stage import parse_args
from cnn_compress.data.dataset import load_dataset
from cnn_compress.data.sources import file_digest
from cnn_compress.models.checkpoint import Checkpoint, load_pretrained, save_checkpoint
from cnn_compress.models.config import ModelConfig
from cnn_compress.models.user import check_io, check_tracked, is_import_path
from cnn_compress.models.zoo import build_model, head_names
from cnn_compress.train.config import TrainConfig
from cnn_compress.train.loop import evaluate, freeze, is_writer, setup_torch, train_model, world_size


@cli
def main() -> None:
    parse_args(__doc__, variant=False)
    params = read_params()
    model_cfg, cfg = load_section(ModelConfig, params), load_section(TrainConfig, params)
    ds = load_dataset("data/prepared")
    setup_torch(cfg.seed, cfg.threads)
    args = model_cfg.arch_args(ds.num_classes)
    model = build_model(model_cfg.arch, **args)
    input_shape = tuple(ds.images.shape[1:])
    if is_import_path(model_cfg.arch):  # your own model: it must fit the data, and its code be a dependency
        check_io(model, model_cfg.arch, input_shape, ds.num_classes)
        check_tracked(model_cfg.arch)
    config = {"model": to_dict(model_cfg), "train": to_dict(cfg)}
    if model_cfg.pretrained:
        heads = head_names(model_cfg.arch, model, input_shape, ds.num_classes)
        load_pretrained(model, model_cfg.pretrained, heads, model_cfg.reset_head)
        config["pretrained_sha256"] = file_digest(model_cfg.pretrained)
    frozen = freeze(model, model_cfg.freeze)
    history = train_model(model, ds, cfg, resume="models/baseline.pt")  # under torchrun: DistributedDataParallel, one shard per rank
    if not is_writer():
        return
    ckpt = Checkpoint(model, model_cfg.arch, args, ds.class_names, ds.mean, ds.std,
                      input_shape, history=[{"stage": "train", "config": config}])
    save_checkpoint("models/baseline.pt", ckpt)
    test = evaluate(model, ds, "test")
    atomic.write_json("metrics/train.json", {"top1": round(test["top1"], 2), "top5": round(test["top5"], 2)})
    atomic.write_json("models/train.json", test | {"epochs": cfg.epochs, "frozen_tensors": frozen, "world_size": world_size()})
    atomic.write_csv("plots/train_curve.csv", history)
    print(f"baseline {model_cfg.arch}: test top-1 {test['top1']:.2f}%")


if __name__ == "__main__":
    main()
