"""Data sets as tensors: decode once into uint8, then normalise and augment whole batches.

``prepare`` turns a registered data set into ``dataset.pt`` (uint8 images, labels, class names,
split indices, normalisation) that DVC caches; training never touches a decoder again. Batches
are cut with ``randperm`` and augmented with tensor ops (random crop, flip, cutout), on CPU or
GPU alike. Readers for the sources live in ``sources.py`` (CIFAR archives, image folders).
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnn_compress.core import atomic
from cnn_compress.core.errors import ConfigError, DataError
from cnn_compress.core.registry import Registry
from cnn_compress.data import sources
from cnn_compress.data.config import DataConfig

SELECT, REPORT = "select", "report"  # the two parts of the test split (docs/selection-split.md)
MIN_PER_CLASS = 1  # test, select, report: fewer images of a class in one of them is an error
WARN_PER_CLASS = 10  # below this many per class, top-1 moves in steps too coarse to compare (a warning)


@dataclass(frozen=True)
class RawDataset:
    """What a data set loader returns: all images, before any split."""

    images: torch.Tensor  # uint8, N x 3 x H x W
    labels: torch.Tensor  # int64, N
    class_names: list[str]
    checksum: str  # sha256 of the source, recorded so a changed source is visible in metrics
    test_indices: np.ndarray | None = None  # a predefined test split (CIFAR), else None


@dataclass(frozen=True)
class Dataset:
    """A prepared data set: uint8 images plus the split and the normalisation to apply."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    splits: dict[str, torch.Tensor]  # train / val / test -> int64 indices
    mean: tuple[float, ...]
    std: tuple[float, ...]
    checksum: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_selection(self) -> bool:
        """Whether prepare carved ``select`` / ``report`` from the test split (data.select_fraction > 0)."""
        return SELECT in self.splits and REPORT in self.splits

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of a named split: train, val, test, and select / report when prepared."""
        if name not in self.splits:
            hint = " (set data.select_fraction, e.g. 0.5, and re-run prepare)" if name in (SELECT, REPORT) else ""
            raise DataError(f"the prepared data set has no '{name}' split{hint}; it has {', '.join(self.splits)}")
        idx = self.splits[name]
        return self.images[idx], self.labels[idx]


def choice_split(ds: Dataset, fallback: str) -> str:
    """The split that choices read: ``select`` when the data set has one, else ``fallback``."""
    return SELECT if ds.has_selection else fallback


def report_split(ds: Dataset) -> str:
    """The split every reported accuracy reads: ``report`` when the data set has one, else ``test``."""
    return REPORT if ds.has_selection else "test"


DatasetLoader = Callable[[DataConfig], RawDataset]
DATASETS: Registry[DatasetLoader] = Registry("data.name", "data set")


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    return DATASETS.register(name)


def dataset_names() -> list[str]:
    return DATASETS.names()


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """(N x 8 x 8 pixels 0..16, labels) of scikit-learn's bundled digits, read from its CSV:
    ``sklearn.datasets`` itself takes about 4 s to import, longer than the whole tiny pipeline stage."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("sklearn")
    path = os.path.join(next(iter(spec.submodule_search_locations or [""])), "datasets", "data", "digits.csv.gz") if spec else ""
    if os.path.isfile(path):
        table = np.loadtxt(path, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits  # a layout we do not know: the public loader

    bunch = load_digits()
    return bunch.images, np.asarray(bunch.target, dtype=np.int64)


@register_dataset("digits")
def _digits(cfg: DataConfig) -> RawDataset:
    """scikit-learn's bundled 8x8 handwritten digits, upscaled to RGB image_size (offline)."""
    raw, target = _digits_table()
    pixels = np.asarray(raw, dtype=np.float32)  # N x 8 x 8, values 0..16
    x = torch.from_numpy(pixels / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(target)
    checksum = hashlib.sha256(np.ascontiguousarray(raw).tobytes()).hexdigest()
    return RawDataset(images, labels, [str(n) for n in range(10)], checksum)


@register_dataset("synthetic")
def _synthetic(cfg: DataConfig) -> RawDataset:
    """Ten learnable classes of noisy templates: a fast, dependency-free data set for tests."""
    gen = torch.Generator().manual_seed(cfg.seed)
    num_classes, per_class, size = 10, 60, cfg.image_size
    templates = torch.rand(num_classes, 3, 4, 4, generator=gen)
    templates = F.interpolate(templates, size=(size, size), mode="nearest")
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    noise = 0.25 * torch.randn(len(labels), 3, size, size, generator=gen)
    images = ((templates[labels] + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    checksum = hashlib.sha256(images.numpy().tobytes()).hexdigest()
    return RawDataset(images, labels, [f"class{i}" for i in range(num_classes)], checksum)


@register_dataset("cifar10")
def _cifar10(cfg: DataConfig) -> RawDataset:
    return _from_source(sources.read_cifar("cifar10", cfg.source, cfg.download_dir), cfg)


@register_dataset("cifar100")
def _cifar100(cfg: DataConfig) -> RawDataset:
    return _from_source(sources.read_cifar("cifar100", cfg.source, cfg.download_dir), cfg)


@register_dataset("imagefolder")
def _imagefolder(cfg: DataConfig) -> RawDataset:
    if not cfg.source:
        raise ConfigError("data.source: imagefolder needs a directory or .tar/.tar.gz archive")
    size = cfg.image_size if cfg.resize else None
    split = sources.read_imagefolder(cfg.source, per_class=cfg.max_per_class, resize=size)
    if not cfg.resize and split.images.shape[-1] != cfg.image_size:
        raise DataError(f"{cfg.source}: images are {split.images.shape[-1]}px, data.image_size is "
                        f"{cfg.image_size} (set data.resize: true to resize)")
    return _from_source(split, cfg)


def _from_source(src: sources.SplitImages, cfg: DataConfig) -> RawDataset:
    """A source with its own train/test split: keep the test split as the one we report on, at
    ``data.image_size`` (image folders arrive at that size already, or were refused)."""
    if src.images.shape[-1] != cfg.image_size:
        x = F.interpolate(src.images.float(), size=(cfg.image_size, cfg.image_size), mode="bilinear",
                          align_corners=False, antialias=True)
        images = x.round().clamp(0, 255).to(torch.uint8)
    else:
        images = src.images
    test = np.flatnonzero(src.is_test.numpy())
    return RawDataset(images, src.labels, src.class_names, src.checksum, test)


def load_raw(cfg: DataConfig) -> RawDataset:
    return DATASETS.get(cfg.name)(cfg)


def stratified_split(
    labels: np.ndarray, cfg: DataConfig, test_indices: np.ndarray | None = None,
    class_names: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded, class-stratified train/val/test indices, each sorted for stable storage.

    With ``test_indices`` (a source's own test split) those are the test set and val is carved
    from the rest; ``max_per_class`` then caps each class in each of the two source splits.
    """
    rng = np.random.default_rng(cfg.seed)
    is_test = np.zeros(len(labels), dtype=bool)
    if test_indices is not None:
        is_test[test_indices] = True
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero((labels == c) & ~is_test))
        cap = cfg.max_per_class or None
        if test_indices is not None:
            test = rng.permutation(np.flatnonzero((labels == c) & is_test))[:cap]
            idx = idx[:cap]
        else:
            idx = idx[:cap]
            n_test = max(1, round(len(idx) * cfg.test_fraction))
            test, idx = idx[:n_test], idx[n_test:]
        n_val = max(1, round(len(idx) * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
        if len(idx) - n_val < 1 or len(test) < MIN_PER_CLASS:
            name = class_names[c] if class_names else c
            raise DataError(f"class {name} has only {len(idx) + len(test)} images: too few to split (each class "
                            "needs >= 1 test image, >= 1 training image and, with data.val_fraction > 0, "
                            ">= 1 validation image; raise data.max_per_class or bring more images)")
        splits["test"] += test.tolist()
        splits["val"] += idx[:n_val].tolist()
        splits["train"] += idx[n_val:].tolist()
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in splits.items()}


def selection_split(
    test: np.ndarray, labels: np.ndarray, fraction: float, seed: int, class_names: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Split the test positions ``test`` into ``select`` (``fraction`` of each class, rounded half up,
    at least one) and ``report`` (the rest), both sorted.

    Each test image draws a seeded random key from its position alone (labels play no part), and
    each class sends its smallest keys to ``select``: a report image's label reaches the draw only
    through its class's size. The generator is separate from the train/val/test split's, so that
    split stays as it was."""
    test = np.sort(np.asarray(test, dtype=np.int64))
    keys = np.random.default_rng([seed, 0x5E1EC7]).random(len(test))
    select: list[np.ndarray] = []
    for c in np.unique(labels[test]):
        members = np.flatnonzero(labels[test] == c)
        if len(members) < 2 * MIN_PER_CLASS:
            name = class_names[c] if class_names else c
            raise DataError(f"class {name} has {len(members)} test image(s): data.select_fraction needs >= 2 per "
                            "class (>= 1 in select and >= 1 in report)")
        k = min(max(int(np.floor(fraction * len(members) + 0.5)), MIN_PER_CLASS), len(members) - MIN_PER_CLASS)
        select.append(test[members[np.argsort(keys[members], kind="stable")[:k]]])
    chosen = np.sort(np.concatenate(select))
    return {SELECT: chosen, REPORT: np.setdiff1d(test, chosen)}


def warn_small_splits(splits: dict[str, np.ndarray], labels: np.ndarray, class_names: list[str]) -> None:
    """One warning line per scored split with fewer than WARN_PER_CLASS images of some class: its
    top-1 moves in steps of 100/N points, so small differences between variants are noise."""
    for name in ("test", SELECT, REPORT):
        if name not in splits or not len(splits[name]):
            continue
        counts = np.bincount(labels[splits[name]], minlength=len(class_names))
        least = int(counts.argmin())
        if counts[least] < WARN_PER_CLASS:
            print(f"warning: data: the {name} split holds {len(splits[name])} images, {counts[least]} of class "
                  f"'{class_names[least]}' (below {WARN_PER_CLASS} per class one image moves top-1 by "
                  f"{100 / len(splits[name]):.2g} points or more; raise data.max_per_class or bring more images)",
                  file=sys.stderr)


def prepare(cfg: DataConfig, out_dir: str | Path) -> Dataset:
    """Decode a data set once into tensors and write ``dataset.pt`` + ``meta.json``."""
    raw = load_raw(cfg)
    splits = stratified_split(raw.labels.numpy(), cfg, raw.test_indices, raw.class_names)
    used = np.sort(np.concatenate(list(splits.values())))  # max_per_class drops the rest
    images, labels = raw.images[torch.from_numpy(used)], raw.labels[torch.from_numpy(used)]
    splits = {k: np.searchsorted(used, v) for k, v in splits.items()}
    if cfg.select_fraction > 0:  # off by default: the splits (and the file's bytes) stay as they were
        splits |= selection_split(splits["test"], labels.numpy(), cfg.select_fraction, cfg.seed,
                                  raw.class_names)
    warn_small_splits(splits, labels.numpy(), raw.class_names)
    train = images[torch.from_numpy(splits["train"])].float() / 255
    mean = cfg.mean or tuple(round(v, 6) for v in train.mean(dim=(0, 2, 3)).tolist())
    std = cfg.std or tuple(round(max(v, 1e-3), 6) for v in train.std(dim=(0, 2, 3)).tolist())
    ds = Dataset(
        images, labels, raw.class_names,
        {k: torch.from_numpy(v) for k, v in splits.items()}, mean, std, raw.checksum,
    )
    save_dataset(ds, Path(out_dir))
    return ds


def save_dataset(ds: Dataset, out_dir: Path) -> None:
    payload = {
        "images": ds.images, "labels": ds.labels, "class_names": ds.class_names,
        "splits": ds.splits, "mean": list(ds.mean), "std": list(ds.std), "checksum": ds.checksum,
    }
    atomic.write_torch(out_dir / "dataset.pt", payload)
    meta = {
        "num_images": len(ds.labels), "image_shape": list(ds.images.shape[1:]),
        "class_names": ds.class_names, "split_sizes": {k: len(v) for k, v in ds.splits.items()},
        "mean": list(ds.mean), "std": list(ds.std), "source_sha256": ds.checksum,
    }
    atomic.write_json(out_dir / "meta.json", meta)


def load_dataset(path: str | Path) -> Dataset:
    """Load a prepared data set (a ``dataset.pt`` file or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.pt"
    if not path.is_file():
        raise DataError(f"{path}: prepared data set not found (run the prepare stage)")
    try:
        d = torch.load(path, weights_only=True)
        return Dataset(
            d["images"], d["labels"], list(d["class_names"]), dict(d["splits"]),
            tuple(d["mean"]), tuple(d["std"]), d["checksum"],
        )
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise DataError(f"{path}: corrupt prepared data set ({type(exc).__name__})") from None


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 N x C x H x W -> normalised float32, on whatever device ``images`` lives."""
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255 - m) / s


def augment(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator, cutout: int = 0) -> torch.Tensor:
    """Batched random crop (zero padding ``pad``), horizontal flip and cutout, with tensor ops."""
    n, c, h, w = x.shape
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=gen) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(mask, x.flip(3), x)
    if cutout:  # DeVries & Taylor (2017): zero one random square per image, clipped at the border
        cy = torch.randint(0, h, (n, 1), generator=gen).to(x.device) - cutout // 2
        cx = torch.randint(0, w, (n, 1), generator=gen).to(x.device) - cutout // 2
        ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        in_y = (ys >= cy) & (ys < cy + cutout)
        in_x = (xs >= cx) & (xs < cx + cutout)
        x = x * ~(in_y[:, None, :, None] & in_x[:, None, None, :])
    return x


def batches(
    n: int, batch_size: int, gen: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Index batches: shuffled with ``randperm`` when a generator is given, else in order."""
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def balanced_subset(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """The first ``per_class`` positions of each class: deterministic and class-balanced."""
    picks = [torch.nonzero(labels == c).flatten()[:per_class] for c in torch.unique(labels)]
    return torch.sort(torch.cat(picks)).values


def calibration_batch(ds: Dataset, per_class: int) -> torch.Tensor:
    """Normalised class-balanced images from the training split, for INT8 calibration."""
    images, labels = ds.split("train")
    return normalize(images[balanced_subset(labels, per_class)], ds.mean, ds.std)
