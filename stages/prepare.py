"""prepare: decode the data set once into uint8 tensors and split it.

Reads: params.yaml data.*, the source named by data.source (or the download, or bundled digits);
a data.source must lie in inputs/ (the folder DVC tracks for this stage; a symlink there is fine).
Writes: data/prepared/ (uint8 images, labels, splits, class names, normalisation; with
data.select_fraction > 0 also the select/report splits of the test images, docs/selection-split.md).
"""
from cnn_compress.core.config import load_section
from cnn_compress.core.errors import cli
from cnn_compress.core.stage import parse_args
from cnn_compress.data.config import DataConfig
from cnn_compress.data.dataset import prepare
from cnn_compress.data.sources import require_tracked

OUT = "data/prepared"


@cli
def main() -> None:
    parse_args(__doc__, variant=False)
    cfg = load_section(DataConfig)
    require_tracked(cfg.source)
    ds = prepare(cfg, OUT)
    sizes = {k: len(v) for k, v in ds.splits.items()}
    print(f"prepared {cfg.name}: {len(ds.labels)} images, {ds.num_classes} classes, splits {sizes}")


if __name__ == "__main__":
    main()
