"""Readers for real data sources: the official CIFAR python archives and image folders.

Both return every image of both splits as one uint8 tensor, labels, class names, which images
belong to the source's test split, and a sha256 of the source (recorded in ``meta.json``, so a
changed source is visible). Anything malformed is a ``DataError`` naming the first offending file.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import yaml

from cnn_compress.core.errors import ConfigError, DataError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class SplitImages:
    images: torch.Tensor  # uint8 N x 3 x H x W
    labels: torch.Tensor  # int64 N
    class_names: list[str]
    is_test: torch.Tensor  # bool N: in the source's test split
    checksum: str


@dataclass(frozen=True)
class CifarLayout:
    url: str
    md5: str  # of the official archive, as published (and as torchvision checks it)
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    names_key: str
    labels_key: str


CIFAR: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
        "batches.meta", "label_names", "labels",
    ),
    "cifar100": CifarLayout(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python", ("train",), ("test",), "meta", "fine_label_names", "fine_labels",
    ),
}


def inputs_dir(folder: Path = Path(".")) -> Path:
    """The ``inputs/`` folder the prepare stage lists as a DVC dependency (``${up}inputs``), for a
    pipeline run in ``folder``: its place.yaml's ``up`` leads back to the repository root."""
    place = folder / "place.yaml"
    up = ""
    if place.is_file():
        try:
            up = str((yaml.safe_load(place.read_text()) or {}).get("up") or "")
        except (yaml.YAMLError, AttributeError):
            raise ConfigError(f"{place}: not a mapping with an 'up' path") from None
    return Path(os.path.normpath(os.path.abspath(folder / up / "inputs")))


def require_tracked(source: str, folder: Path = Path(".")) -> None:
    """Refuse a ``data.source`` outside ``inputs/``: DVC tracks only that folder, so a file elsewhere
    could be replaced and ``dvc status`` would still say up to date. Symlinks in inputs/ are fine."""
    if not source or not os.path.lexists(folder / source):
        return  # no source, or a missing one: the reader says "not found"
    inputs = inputs_dir(folder)
    given = Path(os.path.normpath(os.path.abspath(folder / source)))
    resolved = Path(os.path.realpath(given.parent)) / given.name  # inputs/ itself may be a link; the file not
    if given.is_relative_to(inputs) or resolved.is_relative_to(os.path.realpath(inputs)):
        return
    shown = os.path.relpath(inputs, os.path.abspath(folder))
    raise ConfigError(f"data.source: {source} is outside {shown}/, so DVC would not see it change; link or "
                      f"copy it into {shown}/ (ln -s {given} {shown}/) and set data.source: {shown}/{given.name}")


def file_digest(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` (torchvision's downloader; tests replace this function)."""
    from torchvision.datasets.utils import download_url

    download_url(url, str(dest.parent), dest.name)


def download_cifar(name: str, download_dir: str | Path) -> Path:
    """The official archive in ``download_dir``, fetched when absent; its md5 must match."""
    layout = CIFAR[name]
    dest = Path(download_dir) / layout.url.rsplit("/", 1)[1]
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            fetch(layout.url, dest)
        except Exception as exc:  # URLError, HTTPError, socket errors: all mean "no archive"
            raise DataError(f"{name}: download of {layout.url} failed ({exc}); set data.source "
                            "to a local copy of the archive") from None
    if file_digest(dest, "md5") != layout.md5:
        raise DataError(f"{dest}: md5 does not match the published {name} archive (delete it to re-download)")
    return dest


class _ArrayUnpickler(pickle.Unpickler):
    """The CIFAR batches are pickles: allow numpy arrays and nothing that could run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:
        raise DataError(f"{where}: not a CIFAR batch ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: not a CIFAR batch (no dict inside)")
    return obj


def _cifar_members(source: Path, layout: CifarLayout) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes) of the batch files, from the archive or an extracted folder."""
    wanted = {*layout.train, *layout.test, layout.meta}
    if source.is_dir():
        root = source / layout.folder if (source / layout.folder).is_dir() else source
        for name in sorted(wanted):
            if not (root / name).is_file():
                raise DataError(f"{root / name}: missing from the {layout.folder} folder")
            yield name, (root / name).read_bytes()
        return
    found = set()
    for name, data in iter_archive(source):
        base = PurePosixPath(name)
        if base.parent.name == layout.folder and base.name in wanted:
            found.add(base.name)
            yield base.name, data
    if wanted - found:
        raise DataError(f"{source}: archive lacks {layout.folder}/{sorted(wanted - found)[0]}")


def read_cifar(name: str, source: str, download_dir: str | Path) -> SplitImages:
    """CIFAR-10/100 from the official python archive (``source`` = archive, folder, or "" to download)."""
    layout = CIFAR[name]
    path = Path(source) if source else download_cifar(name, download_dir)
    if not path.exists():
        raise DataError(f"{path}: data.source not found")
    batches = {n: _unpickle(d, f"{path}:{n}") for n, d in _cifar_members(path, layout)}
    class_names = [str(c) for c in batches[layout.meta][layout.names_key]]
    parts, labels, is_test = [], [], []
    for split, files in (("train", layout.train), ("test", layout.test)):
        for f in files:
            b = batches[f]
            if "data" not in b or layout.labels_key not in b:
                raise DataError(f"{path}:{f}: batch lacks 'data' or '{layout.labels_key}'")
            data = np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            parts.append(data)
            labels.append(np.asarray(b[layout.labels_key], dtype=np.int64))
            is_test.append(np.full(len(data), split == "test"))
    checksum = file_digest(path) if path.is_file() else _tree_digest(path)
    return SplitImages(torch.from_numpy(np.concatenate(parts)), torch.from_numpy(np.concatenate(labels)),
                       class_names, torch.from_numpy(np.concatenate(is_test)), checksum)


class _HeaderLog(tarfile.TarInfo):
    """Records why tarfile stopped reading headers: it ends quietly on a missing or damaged header
    (a file cut at a member boundary reads as a shorter archive), so completeness is checked here."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        tar.last_header = "member"  # type: ignore[attr-defined]
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as exc:
            tar.last_header = type(exc).__name__  # type: ignore[attr-defined]
            raise


def _require_end(tar: tarfile.TarFile, path: Path, count: int) -> None:
    """A complete tar ends with two zero blocks; reading on to the end of a compressed stream makes
    its decompressor check the stream's length and CRC."""
    stopped = getattr(tar, "last_header", "")
    if stopped == "InvalidHeaderError":
        raise DataError(f"{path}: corrupt or unreadable archive (damaged header after {count} files)")
    if stopped != "EOFHeaderError" or tar.fileobj.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
        files = f"{count} file{'s' if count != 1 else ''}"
        raise DataError(f"{path}: corrupt or unreadable archive (truncated: it ends after {files} without the "
                        "end-of-archive blocks; copy it again)")
    while tar.fileobj.read(1 << 20):
        pass


def iter_archive(path: Path) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of every regular file in a .tar / .tar.gz, in archive order; an archive
    cut short (even at a member boundary) or with a bad compressed stream is a DataError."""
    try:
        with tarfile.open(path, "r:*", tarinfo=_HeaderLog) as tar:
            count = 0
            for member in tar:
                if member.isfile():
                    f = tar.extractfile(member)
                    count += 1
                    yield member.name, f.read() if f else b""
            _require_end(tar, path, count)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        cut = isinstance(exc, EOFError) or "unexpected end of data" in str(exc)
        what = "truncated: the file ends early; copy it again" if cut else f"{type(exc).__name__}: {exc}"
        raise DataError(f"{path}: corrupt or unreadable archive ({what})") from None


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(file_digest(f).encode())
    return h.hexdigest()


def _layout_key(name: str) -> tuple[str, str, str] | None:
    """``[prefix/]split/class/file`` -> (split, class, file); None for files outside the layout."""
    parts = PurePosixPath(name).parts
    if len(parts) < 3 or parts[-3] not in SPLITS or any(p.startswith(".") for p in parts):
        return None
    return parts[-3], parts[-2], parts[-1]


def _image_files(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            yield f.relative_to(path).as_posix(), f.read_bytes()
    elif path.is_file():
        yield from iter_archive(path)
    else:
        raise DataError(f"{path}: data.source not found")


def read_imagefolder(
    source: str | Path, per_class: int = 0, resize: int | None = None, splits: tuple[str, ...] = SPLITS
) -> SplitImages:
    """Decode ``train/<class>/*`` and ``test/<class>/*`` (a folder or a .tar/.tar.gz archive).

    Classes are the sorted folder names (label = index); both splits must have the same set.
    Files are taken in sorted order, the first ``per_class`` per class and split when set.
    Every image must decode and, unless ``resize`` is given, all must share one size.
    """
    path = Path(source)
    files: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    for name, data in _image_files(path):
        key = _layout_key(name)
        if key is not None:
            files.setdefault(key[:2], []).append((name, data))
    if not files:
        raise DataError(f"{path}: no train/<class>/ or test/<class>/ image folders found")
    classes = {s: {c for (sp, c) in files if sp == s} for s in SPLITS}
    for a, b in (("train", "test"), ("test", "train")):
        extra = sorted(classes[a] - classes[b])
        if extra:
            raise DataError(f"{path}: class folder '{extra[0]}' is in {a}/ but missing from {b}/")
    class_names = sorted(classes["train"])
    if len(class_names) < 2:
        raise DataError(f"{path}: only one class folder ('{class_names[0]}'); a classifier needs at least two")
    images, labels, is_test = [], [], []
    shape: tuple[tuple[int, int], str] | None = None
    for split in splits:
        for label, cls in enumerate(class_names):
            chosen = sorted(files[(split, cls)])[: per_class or None]
            for name, data in chosen:
                arr = _decode(name, data, resize)
                if shape is None:
                    shape = (arr.shape[:2], name)
                elif arr.shape[:2] != shape[0]:
                    raise DataError(f"{name}: image is {arr.shape[1]}x{arr.shape[0]}, but {shape[1]} is "
                                    f"{shape[0][1]}x{shape[0][0]} (set data.resize: true)")
                images.append(arr)
                labels.append(label)
                is_test.append(split == "test")
    checksum = file_digest(path) if path.is_file() else _tree_digest(path)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return SplitImages(x, torch.tensor(labels, dtype=torch.int64), class_names, torch.tensor(is_test), checksum)


def _decode(name: str, data: bytes, resize: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            if resize:
                img = img.resize((resize, resize), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{name}: cannot decode image ({type(exc).__name__})") from None
