"""prepare: decode the data set once into uint8 tensors + split -> data/prepared/."""
from cnn_compress.config import DataConfig, load_section
from cnn_compress.data import prepare
from cnn_compress.errors import cli

OUT = "data/prepared"


@cli
def main() -> None:
    cfg = load_section(DataConfig)
    ds = prepare(cfg, OUT)
    sizes = {k: len(v) for k, v in ds.splits.items()}
    print(f"prepared {cfg.name}: {len(ds.labels)} images, {ds.num_classes} classes, splits {sizes}")


if __name__ == "__main__":
    main()
