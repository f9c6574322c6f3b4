"""The select / report split of the test images (issue 31, item 1; docs/selection-split.md)."""
import json

import numpy as np
import pytest
import torch

from cnn_compress.core.config import parse_section
from cnn_compress.core.errors import ConfigError, DataError
from cnn_compress.data.config import DataConfig
from cnn_compress.data.dataset import (
    choice_split,
    load_dataset,
    prepare,
    report_split,
    save_dataset,
    selection_split,
)
from cnn_compress.data.evaluation import predict_logits, score


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    """The default digits with half of each test class as the select split."""
    return prepare(DataConfig(select_fraction=0.5), tmp_path_factory.mktemp("sel"))


def test_cifar10_sized_test_split_gives_500_per_class():
    rng = np.random.default_rng(7)
    labels = rng.permutation(np.repeat(np.arange(10), 1000))  # CIFAR-10's test split: 1,000 per class
    split = selection_split(np.arange(10_000), labels, 0.5, seed=0)
    assert np.bincount(labels[split["select"]]).tolist() == [500] * 10
    assert np.bincount(labels[split["report"]]).tolist() == [500] * 10


def test_split_is_stratified_disjoint_and_covers_test_exactly(selected):
    select, report, test = (selected.splits[k].numpy() for k in ("select", "report", "test"))
    assert not set(select) & set(report)
    assert np.array_equal(np.sort(np.concatenate([select, report])), test)
    test_counts = np.bincount(selected.labels[test].numpy(), minlength=10)
    select_counts = np.bincount(selected.labels[select].numpy(), minlength=10)
    assert select_counts.tolist() == np.floor(test_counts * 0.5 + 0.5).astype(int).tolist()  # per class, half up
    assert selected.has_selection and choice_split(selected, "val") == "select" and report_split(selected) == "report"
    images, labels = selected.split("select")
    assert torch.equal(labels, selected.labels[selected.splits["select"]]) and len(images) == len(select)


def test_split_is_seeded_and_leaves_train_val_test_as_they_were(tmp_path, selected):
    again = prepare(DataConfig(select_fraction=0.5), tmp_path / "again")
    assert torch.equal(again.splits["select"], selected.splits["select"])
    other = prepare(DataConfig(select_fraction=0.5, seed=1), tmp_path / "seed1")
    plain = prepare(DataConfig(seed=1), tmp_path / "plain")
    assert not torch.equal(other.splits["select"], selected.splits["select"])
    for name in ("train", "val", "test"):  # the select draw has its own generator
        assert torch.equal(other.splits[name], plain.splits[name])
    meta = json.loads((tmp_path / "seed1/meta.json").read_text())
    assert meta["split_sizes"]["select"] + meta["split_sizes"]["report"] == meta["split_sizes"]["test"]


def test_off_by_default_writes_only_train_val_test(tmp_path):
    """The default pipeline's data/prepared must not change (a changed output re-runs every stage)."""
    ds = prepare(DataConfig(max_per_class=20), tmp_path / "o")
    assert list(ds.splits) == ["train", "val", "test"] and not ds.has_selection
    assert list(load_dataset(tmp_path / "o").splits) == ["train", "val", "test"]
    assert choice_split(ds, "val") == "val" and report_split(ds) == "test"
    with pytest.raises(DataError, match=r"has no 'select' split \(set data.select_fraction, e.g. 0.5"):
        ds.split("select")


def test_report_labels_cannot_reach_a_choice(tmp_path, selected):
    """A choice reads only select: flipping every report label (on disk, as a consumer loads it) changes
    each report accuracy and neither the select images, their labels, nor which model wins on select."""
    models = {  # two fixed "models": logits from the image's mean brightness, two ways
        "a": lambda x: torch.stack([x.mean((1, 2, 3)) * (c + 1) for c in range(10)], 1),
        "b": lambda x: torch.stack([-x.mean((1, 2, 3)) * (c + 1) for c in range(10)], 1),
    }

    def accuracy(ds, split):
        images, labels = ds.split(split)
        return {k: score(predict_logits(m, images, ds.mean, ds.std, 256), labels)["top1"] for k, m in models.items()}

    labels = selected.labels.clone()
    report = selected.splits["report"]
    labels[report] = (labels[report] + 1) % 10  # every report label wrong
    save_dataset(type(selected)(selected.images, labels, selected.class_names, selected.splits, selected.mean,
                                selected.std, selected.checksum), tmp_path)
    changed = load_dataset(tmp_path)
    assert accuracy(changed, "report") != accuracy(selected, "report")
    images, picked = changed.split("select")
    assert torch.equal(images, selected.split("select")[0]) and torch.equal(picked, selected.split("select")[1])
    before, after = accuracy(selected, "select"), accuracy(changed, "select")
    assert before == after and max(before, key=before.get) == max(after, key=after.get)


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^data\.select_fraction: must be in \[0, 1\) .*got 1\.0$"):
        parse_section(DataConfig, {"select_fraction": 1.0})
    with pytest.raises(DataError, match=r"class 0 has 1 test image\(s\): data.select_fraction needs >= 2 per class"):
        prepare(DataConfig(max_per_class=3, select_fraction=0.5), tmp_path / "o")


def test_benchmark_reports_accuracy_on_report_and_keeps_select_for_choices(selected, digits_checkpoint, tmp_path):
    """The benchmark stage's top1 (metrics, tables, README) reads `report`; `top1_select` is what choices read."""
    from cnn_compress.measure.benchmark import evaluate_artifact
    from cnn_compress.measure.config import BenchmarkConfig
    from cnn_compress.models.checkpoint import save_checkpoint
    from cnn_compress.train.loop import evaluate

    path = tmp_path / "model.pt"
    save_checkpoint(path, digits_checkpoint)
    row, _ = evaluate_artifact(path, selected, BenchmarkConfig())
    model = digits_checkpoint.model.eval()
    assert row["split"] == "report"
    assert row["top1"] == pytest.approx(evaluate(model, selected, "report")["top1"], abs=1e-3)
    assert row["top1_select"] == pytest.approx(evaluate(model, selected, "select")["top1"], abs=1e-3)
