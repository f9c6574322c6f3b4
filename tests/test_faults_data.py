"""Damaged or unfit input data stops the prepare stage with one line and exit code 2 (issue 32, item 5):
a truncated archive, a data.source DVC cannot watch, and splits too small to score."""
import gzip
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import dvc, make_project, set_params
from PIL import Image

from cnn_compress.core.errors import ConfigError, DataError
from cnn_compress.data import sources
from cnn_compress.data.config import DataConfig
from cnn_compress.data.dataset import prepare
from cnn_compress.data.evaluation import score

CLASSES = ("cat", "dog", "ship")


def image_tar(dest: Path, per_class: int = 4, seed: int = 0, mode: str = "w") -> Path:
    """An image-folder archive (train/ and test/, 8x8 PNGs) written straight from memory."""
    rng = np.random.default_rng(seed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, mode) as tar:
        for split in ("train", "test"):
            for c in CLASSES:
                for i in range(per_class):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
                    info = tarfile.TarInfo(f"data/{split}/{c}/{i:03d}.png")
                    info.size, info.mtime = len(buf.getvalue()), 0
                    tar.addfile(info, io.BytesIO(buf.getvalue()))
    return dest


def cut_at_member(archive: Path, dest: Path, keep: int) -> Path:
    """The first ``keep`` members of a plain tar, cut exactly at the next member's header."""
    with tarfile.open(archive) as tar:
        offset = tar.getmembers()[keep].offset
    dest.write_bytes(archive.read_bytes()[:offset])
    return dest


def run_prepare(project: Path) -> subprocess.CompletedProcess[str]:
    """``python stages/prepare.py`` as dvc.yaml runs it, in ``project``."""
    env = os.environ | {"PYTHONPATH": str(project / "src")}
    return subprocess.run([sys.executable, "stages/prepare.py"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_tar_cut_at_a_member_boundary_is_truncated_not_shorter(tmp_path):
    """tarfile alone reads such a file as a smaller archive: 20 of 24 images, no word."""
    whole = image_tar(tmp_path / "whole.tar")
    assert len(list(sources.iter_archive(whole))) == 24
    cut = cut_at_member(whole, tmp_path / "cut.tar", keep=20)
    with tarfile.open(cut) as tar:
        assert len(tar.getmembers()) == 20  # what the reader saw before
    with pytest.raises(DataError, match=r"cut\.tar: .*truncated: it ends after 20 files without the end-of-archive"):
        sources.read_imagefolder(cut)
    # the same truncated tar inside a complete gzip stream: found after decompression
    (tmp_path / "cut.tar.gz").write_bytes(gzip.compress(cut.read_bytes(), mtime=0))
    with pytest.raises(DataError, match=r"cut\.tar\.gz: .*truncated"):
        sources.read_imagefolder(tmp_path / "cut.tar.gz")


@pytest.mark.parametrize("drop", [1, 4, 9, 500, "half"])
def test_cut_gzip_stream_is_one_data_error(tmp_path, drop):
    """Cut anywhere, the trailer included (its CRC and length were never read before): one DataError."""
    data = image_tar(tmp_path / "whole.tar.gz", mode="w:gz").read_bytes()
    end = len(data) // 2 if drop == "half" else len(data) - drop
    (tmp_path / "cut.tar.gz").write_bytes(data[:end])
    with pytest.raises(DataError, match=r"cut\.tar\.gz: corrupt or unreadable archive \(truncated"):
        sources.read_imagefolder(tmp_path / "cut.tar.gz")


def test_garbage_where_a_header_belongs_is_refused(tmp_path):
    whole = image_tar(tmp_path / "whole.tar")
    cut = cut_at_member(whole, tmp_path / "bad.tar", keep=5)
    cut.write_bytes(cut.read_bytes() + b"x" * 2048)
    with pytest.raises(DataError, match=r"bad\.tar: corrupt or unreadable archive \(damaged header after 5 files"):
        sources.read_imagefolder(cut)


@pytest.fixture(scope="module")
def folder_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh tiny project whose data is an 8x8 image folder in inputs/ (3 classes, 8 per split)."""
    project = make_project(tmp_path_factory.mktemp("faults") / "p")
    image_tar(project / "inputs/images.tar", per_class=8)
    set_params(project, {"data": {"name": "imagefolder", "source": "inputs/images.tar", "image_size": 8,
                                  "max_per_class": 0}})
    return project


def test_prepare_stage_refuses_a_truncated_tar(folder_project, tmp_path):
    good = folder_project / "inputs/images.tar"
    saved = tmp_path / "images.tar"
    saved.write_bytes(good.read_bytes())
    try:
        cut_at_member(saved, good, keep=40)  # 40 of the 48 images, cut at a member boundary
        line = one_error_line(run_prepare(folder_project))
        assert line.startswith("error: inputs/images.tar: corrupt or unreadable archive (truncated: it ends "
                               "after 40 files")
        assert not (folder_project / "data/prepared/dataset.pt").exists()  # the fixture's project never prepared
    finally:
        good.write_bytes(saved.read_bytes())


def test_prepare_stage_refuses_a_source_outside_inputs(folder_project, tmp_path):
    outside = image_tar(tmp_path / "elsewhere/images.tar", per_class=8)
    set_params(folder_project, {"data": {"source": str(outside)}})
    try:
        line = one_error_line(run_prepare(folder_project))
    finally:
        set_params(folder_project, {"data": {"source": "inputs/images.tar"}})
    assert line == (f"error: data.source: {outside} is outside inputs/, so DVC would not see it change; link or "
                    f"copy it into inputs/ (ln -s {outside} inputs/) and set data.source: inputs/images.tar")


def test_source_linked_into_inputs_is_accepted_and_watched_by_dvc(folder_project, tmp_path):
    """The hint's remedy works: a symlink in inputs/ prepares, and replacing its target re-runs prepare."""
    target = image_tar(tmp_path / "elsewhere/linked.tar", per_class=8, seed=1)
    (folder_project / "inputs/linked.tar").symlink_to(target)
    set_params(folder_project, {"data": {"source": "inputs/linked.tar"}})
    try:
        dvc("repro", "prepare", cwd=folder_project)
        assert "up to date" in dvc("status", "prepare", cwd=folder_project).stdout
        image_tar(target, per_class=8, seed=2)  # the file behind the link is replaced
        status = dvc("status", "prepare", cwd=folder_project).stdout
        assert "changed deps" in status and "inputs" in status, status
    finally:
        (folder_project / "inputs/linked.tar").unlink()
        set_params(folder_project, {"data": {"source": "inputs/images.tar"}})


def test_study_folder_inputs_are_the_repository_roots(tmp_path):
    """A study folder (place.yaml up: ../../../) names its source ../../../inputs/...: accepted; its own
    copy beside params.yaml is not (DVC watches only the root's inputs/ there)."""
    study = tmp_path / "studies/s/cpu"
    study.mkdir(parents=True)
    (study / "place.yaml").write_text("up: ../../../\nlib: lib\n")
    image_tar(tmp_path / "inputs/images.tar")
    sources.require_tracked("../../../inputs/images.tar", study)
    image_tar(study / "images.tar")
    with pytest.raises(ConfigError, match=r"^data\.source: images\.tar is outside \.\./\.\./\.\./inputs/, .*"
                                          r"and set data\.source: \.\./\.\./\.\./inputs/images\.tar$"):
        sources.require_tracked("images.tar", study)
    sources.require_tracked("", study)  # no source (digits, or a CIFAR download): nothing to check
    sources.require_tracked("../../../inputs/missing.tar", study)  # the reader reports a missing file


def test_one_test_image_per_class_warns(tmp_path, capsys):
    """1 test image per class (3 in all): prepared, with a warning that names the coarse steps."""
    archive = image_tar(tmp_path / "inputs/f.tar", per_class=1)
    ds = prepare(DataConfig(name="imagefolder", source=str(archive), image_size=8, val_fraction=0), tmp_path / "o")
    assert len(ds.splits["test"]) == 3
    err = capsys.readouterr().err
    assert "warning: data: the test split holds 3 images, 1 of class 'cat' (below 10 per class one image " \
           "moves top-1 by 33 points" in err


def test_too_few_images_for_a_split_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"class 0 has only 1 images: too few to split \(each class needs >= 1 test "
                                        r"image, >= 1 training image"):
        prepare(DataConfig(max_per_class=1), tmp_path / "o")
    archive = image_tar(tmp_path / "f.tar", per_class=1)  # 1 train image per class cannot also give a val image
    with pytest.raises(DataError, match=r"class cat has only 2 images: too few to split"):
        prepare(DataConfig(name="imagefolder", source=str(archive), image_size=8), tmp_path / "o2")


def test_val_fraction_always_leaves_a_validation_image(tmp_path):
    """3 images per class and val_fraction 0.1 rounded to 0 validation images before; now 1 per class."""
    ds = prepare(DataConfig(max_per_class=3), tmp_path / "o")
    assert torch.bincount(ds.labels[ds.splits["val"]]).tolist() == [1] * 10
    assert torch.bincount(ds.labels[ds.splits["train"]]).tolist() == [1] * 10


def test_scoring_an_empty_split_is_an_error_not_100_percent():
    with pytest.raises(DataError, match="no images to score: the split is empty"):
        score(torch.empty(0, 10), torch.empty(0, dtype=torch.int64))


def test_prepare_stage_too_few_images_is_one_line(folder_project):
    set_params(folder_project, {"data": {"max_per_class": 1, "val_fraction": 0.1}})
    try:
        line = one_error_line(run_prepare(folder_project))
    finally:
        set_params(folder_project, {"data": {"max_per_class": 0}})
    assert line.startswith("error: class cat has only 2 images: too few to split")
