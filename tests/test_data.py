import numpy as np
import torch

from cnn_compress.data.config import DataConfig
from cnn_compress.data.dataset import augment, balanced_subset, load_dataset, prepare, stratified_split


def test_digits_split_is_stratified_disjoint_and_seeded(tmp_path):
    ds = prepare(DataConfig(), tmp_path)
    assert ds.images.dtype == torch.uint8 and tuple(ds.images.shape[1:]) == (3, 32, 32)
    assert len(ds.labels) == 1797 and ds.num_classes == 10
    parts = [set(ds.splits[k].tolist()) for k in ("train", "val", "test")]
    assert sum(map(len, parts)) == 1797 and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    test_counts = torch.bincount(ds.labels[ds.splits["test"]])
    assert test_counts.min() >= 34 and test_counts.max() <= 38  # ~20% of ~180 per class
    again = stratified_split(ds.labels.numpy(), DataConfig())
    assert np.array_equal(again["test"], ds.splits["test"].numpy())
    other = stratified_split(ds.labels.numpy(), DataConfig(seed=1))
    assert not np.array_equal(other["test"], ds.splits["test"].numpy())


def test_prepared_file_round_trips_and_is_byte_stable(tmp_path):
    prepare(DataConfig(max_per_class=20), tmp_path / "a")
    prepare(DataConfig(max_per_class=20), tmp_path / "b")
    assert (tmp_path / "a/dataset.pt").read_bytes() == (tmp_path / "b/dataset.pt").read_bytes()
    ds = load_dataset(tmp_path / "a")
    assert len(ds.labels) == 200 and len(ds.splits["train"]) == 140


def test_augment_crops_are_shifted_windows_and_flip_mirrors():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, 0, False, gen), x)
    out = augment(x, 1, False, gen)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):  # each output is some 4x4 window of its own padded image
        windows = [padded[i, :, dy : dy + 4, dx : dx + 4] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[i], w) for w in windows)
    flips = [augment(x, 0, True, torch.Generator().manual_seed(s)) for s in range(8)]
    assert any(torch.equal(f[0], x[0].flip(2)) for f in flips) and any(torch.equal(f[0], x[0]) for f in flips)


def test_balanced_subset_takes_the_same_count_per_class():
    labels = torch.tensor([0, 1, 1, 0, 2, 2, 2, 0, 1])
    idx = balanced_subset(labels, 2)
    assert torch.bincount(labels[idx]).tolist() == [2, 2, 2]


def test_synthetic_is_learnable_and_deterministic(tmp_path):
    a = prepare(DataConfig(name="synthetic"), tmp_path / "a")
    b = prepare(DataConfig(name="synthetic"), tmp_path / "b")
    assert torch.equal(a.images, b.images) and a.num_classes == 10


def test_cutout_zeroes_one_square_per_image_on_whole_batches():
    x = torch.ones(64, 3, 16, 16)
    out = augment(x, 0, False, torch.Generator().manual_seed(0), cutout=4)
    zeros = (out == 0).all(dim=1)  # the same pixels in every channel
    counts = zeros.flatten(1).sum(1)
    assert counts.max() == 16 and counts.min() >= 4  # a 4x4 square, clipped at the border
    assert len(set(zeros.flatten(1).float().argmax(1).tolist())) > 10  # squares land in varied places
    rows = zeros.any(dim=2).sum(1)  # each mask is one contiguous square, never two
    assert (rows <= 4).all()


def test_explicit_normalisation_overrides_measured(tmp_path):
    ds = prepare(DataConfig(max_per_class=5, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), tmp_path)
    assert ds.mean == (0.485, 0.456, 0.406) and ds.std == (0.229, 0.224, 0.225)
