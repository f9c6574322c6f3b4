"""The ``data`` section: which images, how they are split and normalised."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cnn_compress.core.config import require


@dataclass(frozen=True)
class DataConfig:
    SECTION: ClassVar[str] = "data"
    name: str = "digits"  # offline default: scikit-learn's bundled 8x8 digits, no download
    source: str = ""  # cifar*: local archive or extracted folder ("" = download); imagefolder: dir or .tar(.gz)
    download_dir: str = "data/download"  # where cifar* archives are downloaded (checked by md5)
    seed: int = 0  # seeds the stratified split and the calibration subset
    val_fraction: float = 0.1  # held out from training for model selection curves
    test_fraction: float = 0.2  # every accuracy we report is on this split (ignored when the source has one)
    image_size: int = 32  # CIFAR-sized inputs so the same models serve every data set
    resize: bool = False  # imagefolder: resize every image to image_size (else all must already match)
    max_per_class: int = 0  # cap images per class and split (0 = all): tiny runs for tests and smoke checks
    mean: tuple[float, ...] = ()  # normalisation; () = measured on the training split
    std: tuple[float, ...] = ()  # e.g. the ImageNet values for the published akamaster ResNets
    # > 0: this part of each class's test images becomes the `select` split (choices read it), the rest
    # the `report` split (reported accuracies read it); for weights that saw the train/val images.
    # 0 = off: no such splits, and data/prepared is byte for byte what it was (docs/selection-split.md)
    select_fraction: float = 0.0

    def __post_init__(self) -> None:
        require(0 <= self.val_fraction < 1, "data.val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        require(0 < self.test_fraction < 1, "data.test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        require(
            self.val_fraction + self.test_fraction < 1,
            "data.test_fraction",
            "val_fraction + test_fraction must leave images to train on",
        )
        require(8 <= self.image_size <= 1024, "data.image_size", f"must be in [8, 1024], got {self.image_size}")
        require(0 <= self.select_fraction < 1, "data.select_fraction",
                f"must be in [0, 1) (0 = no select/report splits), got {self.select_fraction}")
        require(self.max_per_class >= 0, "data.max_per_class", "must be >= 0")
        require(len(self.mean) in (0, 3), "data.mean", f"must list 3 channel values or none, got {list(self.mean)}")
        require(len(self.std) == len(self.mean), "data.std", "must be given together with data.mean (3 values)")
        require(all(v > 0 for v in self.std), "data.std", "must be > 0")
