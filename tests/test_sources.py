"""Real data sources, offline: CIFAR archives built here in the official format, image folders."""
import dataclasses
import hashlib
import os
import pickle
import shutil
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_compress.core.errors import DataError
from cnn_compress.data import sources
from cnn_compress.data.config import DataConfig
from cnn_compress.data.dataset import prepare
from cnn_compress.data.evaluation import predict_logits, score
from cnn_compress.models.checkpoint import load_pretrained
from cnn_compress.models.zoo import build_model

SHARED = Path(os.environ.get("CNN_COMPRESS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CLASSES = ["cat", "dog", "ship"]


def _cifar_archive(path: Path, name: str, per_class_train: int = 6, per_class_test: int = 3) -> Path:
    """A tiny archive laid out exactly like the official cifar-10/100-python.tar.gz."""
    layout = sources.CIFAR[name]
    rng = np.random.default_rng(0)
    n_classes = 10 if name == "cifar10" else 100
    files = {}
    train_files, test_files = layout.train, layout.test
    for split, names, per in (("train", train_files, per_class_train), ("test", test_files, per_class_test)):
        labels = np.repeat(np.arange(n_classes), per)
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        for i, fname in enumerate(names):  # spread images over the batch files
            sel = slice(i, None, len(names))
            files[fname] = {"data": data[sel], layout.labels_key: labels[sel].tolist(), "batch_label": split}
    files[layout.meta] = {layout.names_key: [f"c{i}" for i in range(n_classes)]}
    with tarfile.open(path, "w:gz") as tar:
        for fname, obj in files.items():
            blob = path.parent / fname
            blob.write_bytes(pickle.dumps(obj, protocol=2))
            tar.add(blob, arcname=f"{layout.folder}/{fname}")
            blob.unlink()
    return path


@pytest.fixture()
def offline_download(tmp_path, monkeypatch):
    """Route the CIFAR-10 download to a tiny archive: the fetch is the only thing replaced."""
    archive = _cifar_archive(tmp_path / "built.tar.gz", "cifar10")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(sources.CIFAR, "cifar10", dataclasses.replace(sources.CIFAR["cifar10"], md5=md5))
    calls = []

    def fake_fetch(url, dest):
        calls.append(url)
        dest.write_bytes(archive.read_bytes())

    monkeypatch.setattr(sources, "fetch", fake_fetch)
    return calls


def test_cifar10_download_path_offline(tmp_path, offline_download):
    cfg = DataConfig(name="cifar10", download_dir=str(tmp_path / "dl"), val_fraction=0.2)
    ds = prepare(cfg, tmp_path / "out")
    assert offline_download == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert (tmp_path / "dl/cifar-10-python.tar.gz").is_file()
    assert ds.class_names == [f"c{i}" for i in range(10)] and ds.images.shape[1:] == (3, 32, 32)
    assert len(ds.splits["test"]) == 30  # the archive's own test batch, 3 per class
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 60
    prepare(cfg, tmp_path / "again")  # the cached archive is used; no second download
    assert len(offline_download) == 1


def test_cifar_test_split_is_the_archives_and_pixels_survive(tmp_path):
    archive = _cifar_archive(tmp_path / "c.tar.gz", "cifar10")
    ds = prepare(DataConfig(name="cifar10", source=str(archive)), tmp_path / "out")
    with tarfile.open(archive) as tar:
        test = pickle.loads(tar.extractfile("cifar-10-batches-py/test_batch").read())
    expected = torch.from_numpy(test["data"].reshape(-1, 3, 32, 32))
    got = ds.images[ds.splits["test"]]
    assert sorted(map(bytes, got.flatten(1).numpy())) == sorted(map(bytes, expected.flatten(1).numpy()))


def test_cifar_archive_and_extracted_folder_agree(tmp_path):
    archive = _cifar_archive(tmp_path / "c.tar.gz", "cifar100", per_class_train=2, per_class_test=1)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    a = sources.read_cifar("cifar100", str(archive), tmp_path)
    b = sources.read_cifar("cifar100", str(tmp_path / "x"), tmp_path)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and len(a.class_names) == 100
    assert int(a.is_test.sum()) == 100


def test_download_failures_are_clear(tmp_path, monkeypatch, offline_download):
    def offline(url, dest):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(sources, "fetch", offline)
    with pytest.raises(DataError, match="download of .* failed .*set data.source"):
        sources.download_cifar("cifar10", tmp_path / "a")
    bad = tmp_path / "b/cifar-10-python.tar.gz"
    bad.parent.mkdir()
    bad.write_bytes(b"truncated")
    with pytest.raises(DataError, match="md5 does not match"):
        sources.download_cifar("cifar10", tmp_path / "b")


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for f in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (root / f).write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0]}))
    (root / "batches.meta").write_bytes(pickle.dumps(os.system))  # a pickle that would import os
    with pytest.raises(DataError, match="batches.meta: not a CIFAR batch .*refusing"):
        sources.read_cifar("cifar10", str(tmp_path), tmp_path)


def _image_folder(root: Path, per_class: int = 4, size: int = 8) -> Path:
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i:03d}.png")  # lossless
    (root / "README.txt").write_text("files outside split/class/ are ignored")
    return root


def _tar(folder: Path, dest: Path, mode: str) -> Path:
    with tarfile.open(dest, mode) as tar:
        tar.add(folder, arcname="mydata")  # a top-level prefix, as many archives have
    return dest


def test_imagefolder_dir_tar_and_targz_agree(tmp_path):
    folder = _image_folder(tmp_path / "f")
    a = sources.read_imagefolder(folder)
    b = sources.read_imagefolder(_tar(folder, tmp_path / "f.tar", "w"))
    c = sources.read_imagefolder(_tar(folder, tmp_path / "f.tar.gz", "w:gz"))
    for other in (b, c):
        assert torch.equal(a.images, other.images) and torch.equal(a.labels, other.labels)
    assert a.class_names == CLASSES and a.images.shape == (24, 3, 8, 8) and int(a.is_test.sum()) == 12
    first = np.asarray(Image.open(folder / "train/cat/000.png"))
    assert torch.equal(a.images[0], torch.from_numpy(first).permute(2, 0, 1))


def test_imagefolder_prepare_resize_and_size_check(tmp_path):
    folder = _image_folder(tmp_path / "f")
    with pytest.raises(DataError, match="images are 8px, data.image_size is 32 .*data.resize: true"):
        prepare(DataConfig(name="imagefolder", source=str(folder)), tmp_path / "o1")
    ds = prepare(DataConfig(name="imagefolder", source=str(folder), resize=True, val_fraction=0.25),
                 tmp_path / "o2")
    assert ds.images.shape[1:] == (3, 32, 32) and ds.class_names == CLASSES
    assert torch.bincount(ds.labels[ds.splits["test"]]).tolist() == [4, 4, 4]
    small = prepare(DataConfig(name="imagefolder", source=str(folder), image_size=8, max_per_class=2),
                    tmp_path / "o3")
    assert len(small.splits["test"]) == 6


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "test/ship/000.png").write_bytes(b"\x89PNG broken"), r"test/ship/000.png: cannot decode image"),
        (lambda r: [p.unlink() for p in (r / "test/dog").iterdir()] and (r / "test/dog").rmdir(),
         "class folder 'dog' is in train/ but missing from test/"),
        (lambda r: Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(r / "train/dog/001.png"),
         r"train/dog/001.png: image is 9x9, but .* is 8x8 \(set data.resize: true\)"),
        (lambda r: [shutil.rmtree(r / split / c) for split in ("train", "test") for c in ("dog", "ship")],
         "only one class folder \\('cat'\\); a classifier needs at least two"),
    ],
    ids=["undecodable", "missing-class", "mixed-sizes", "one-class"],
)
def test_imagefolder_errors_name_the_first_offending_file(tmp_path, damage, message):
    folder = _image_folder(tmp_path / "f")
    damage(folder)
    with pytest.raises(DataError, match=message):
        sources.read_imagefolder(_tar(folder, tmp_path / "f.tar.gz", "w:gz"))


def test_corrupt_and_empty_archives(tmp_path):
    archive = _tar(_image_folder(tmp_path / "f"), tmp_path / "f.tar.gz", "w:gz")
    (tmp_path / "cut.tar.gz").write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.tar.gz: corrupt or unreadable archive"):
        sources.read_imagefolder(tmp_path / "cut.tar.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train/<class>/ or test/<class>/ image folders"):
        sources.read_imagefolder(tmp_path / "empty")
    with pytest.raises(DataError, match="data.source not found"):
        sources.read_imagefolder(tmp_path / "nowhere.tar")


def test_shared_resnet20_scores_on_a_balanced_jpeg_subset():
    """The published ResNet-20 through this tool's reader and model: >= 80% on 200 per class."""
    archive, weights = SHARED / "data/cifar10-jpeg.tar.gz", SHARED / "weights/resnet20-cifar10-akamaster.th"
    if not (archive.exists() and weights.exists()):
        pytest.skip(f"shared CIFAR-10 JPEG archive or ResNet-20 weights not under {SHARED}")
    src = sources.read_imagefolder(archive, per_class=200, splits=("test",))
    assert torch.bincount(src.labels).tolist() == [200] * 10
    model = build_model("resnet20", num_classes=10)
    load_pretrained(model, weights, "linear", reset_head=False)
    model.eval()
    torch.set_num_threads(2)
    logits = predict_logits(model, src.images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 250)
    top1 = score(logits, src.labels)["top1"]
    assert top1 >= 80.0, top1
