"""The train stage under torchrun: DistributedDataParallel over two CPU processes (gloo)."""
import csv
import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, set_params

from cnn_compress.data.config import DataConfig
from cnn_compress.data.dataset import prepare
from cnn_compress.models.checkpoint import load_checkpoint


@pytest.mark.slow
def test_train_stage_under_torchrun_two_cpu_ranks(tmp_path):
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    set_params(tmp_path, {"model": {"arch": "resnet8", "width": 8},
                          "train": {"epochs": 4, "batch_size": 32, "lr": 0.05, "threads": 1, "device": "cpu"}})
    prepare(DataConfig(max_per_class=30), tmp_path / "data/prepared")
    # TMPDIR: torchrun leaves a torchelastic_* log folder in the temporary directory; this test's, not /tmp
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "stages/train.py"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("baseline resnet8: test top-1") == 1  # rank 0 alone reports and writes
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["baseline.pt", "train.json"]
    metrics = json.loads((tmp_path / "models/train.json").read_text())
    assert metrics["world_size"] == 2
    rows = list(csv.DictReader(open(tmp_path / "plots/train_curve.csv")))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])  # the loss falls
    ckpt = load_checkpoint(tmp_path / "models/baseline.pt")
    assert ckpt.arch == "resnet8" and ckpt.num_classes == 10

    # finetune the pruned model the same way: the masks hold on every rank, rank 0 writes
    set_params(tmp_path, {"finetune": {"epochs": 1, "threads": 1, "device": "cpu"}})
    for script in (["stages/variants.py"], ["stages/prune.py", "main"]):
        prune = subprocess.run([sys.executable, *script], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert prune.returncode == 0, prune.stderr
    cmd[-1:] = ["stages/finetune.py", "main"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("main: finetuned (1 epochs") == 1
    assert json.loads((tmp_path / "variants/main/finetune.json").read_text())["sparsity"] == pytest.approx(50, abs=0.5)
