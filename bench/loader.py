"""Training throughput: this tool's tensor pipeline vs a torchvision DataLoader, same data, same run.

Trains ResNet-20 on CPU over the same images with the same augmentation (random crop, pad 4, and
horizontal flip), the same batch size and optimiser, fed four ways:

  tensors          uint8 tensors in memory, batched normalise + crop + flip (this tool)
  dl-jpeg-w0       torchvision ImageFolder decoding JPEG files each epoch, DataLoader workers=0
  dl-jpeg-w2       the same with 2 worker processes
  dl-pil-w0        PIL images already decoded in memory + the same transforms, workers=0

Each row: median images/s over ``--repeats`` epochs, data-only images/s (the loader without the
model), and the ratio to the best DataLoader row. Goal: tensors >= 1.5x. Then the time of one
full epoch of CIFAR-10 (45,000 training images) for ResNet-20 and ResNet-18, extrapolated from
``--probe`` timed batches of the tensor pipeline.

Data: the first ``--per-class`` training images per class of ../shared/data/cifar10-jpeg.tar.gz
(or $CNN_COMPRESS_SHARED); without it, synthetic 32x32 JPEGs.

    python bench/loader.py [--per-class 300] [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from cnn_compress.data import sources  # noqa: E402
from cnn_compress.data.dataset import augment, batches, normalize  # noqa: E402
from cnn_compress.measure.benchmark import machine_info  # noqa: E402
from cnn_compress.models.zoo import build_model  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
BATCH = 128


def jpeg_folder(dest: Path, per_class: int) -> tuple[Path, str]:
    """Write an ImageFolder of JPEGs: the shared CIFAR-10 training images, or synthetic ones."""
    shared = Path(os.environ.get("CNN_COMPRESS_SHARED", ROOT.parent / "shared")) / "data/cifar10-jpeg.tar.gz"
    if shared.exists():
        counts: dict[str, int] = {}
        for name, data in sources.iter_archive(shared):
            parts = Path(name).parts
            if len(parts) >= 3 and parts[-3] == "train" and counts.get(parts[-2], 0) < per_class:
                counts[parts[-2]] = counts.get(parts[-2], 0) + 1
                out = dest / parts[-2] / parts[-1]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
        return dest, f"shared CIFAR-10 JPEG, {per_class}/class"
    rng = np.random.default_rng(0)
    for c in range(10):
        (dest / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(dest / f"c{c}/{i}.jpg")
    return dest, f"synthetic JPEG (shared archive absent), {per_class}/class"


def train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, feed) -> int:
    model.train()
    seen = 0
    for x, y in feed:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    return seen


def tensor_feed(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator):
    for idx in batches(len(labels), BATCH, gen):
        yield augment(normalize(images[idx], MEAN, STD), 4, True, gen), labels[idx]


def loaders(folder: Path, images: torch.Tensor, labels: torch.Tensor) -> dict:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    jpeg = datasets.ImageFolder(str(folder), transform=tf)
    pils = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]

    class InMemory(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(pils)

        def __getitem__(self, i: int):
            return tf(pils[i]), int(labels[i])

    gen = torch.Generator().manual_seed(0)
    feeds = {
        "tensors": lambda: tensor_feed(images, labels, gen),
        "dl-jpeg-w0": lambda: DataLoader(jpeg, BATCH, shuffle=True, num_workers=0),
        "dl-jpeg-w2": lambda: DataLoader(jpeg, BATCH, shuffle=True, num_workers=2, persistent_workers=False),
        "dl-pil-w0": lambda: DataLoader(InMemory(), BATCH, shuffle=True, num_workers=0),
    }
    return feeds


def timed(fn) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probe", type=int, default=4, help="batches timed for the epoch estimates")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder, what = jpeg_folder(Path(tmp) / "train", args.per_class)
        from torchvision import datasets

        ref = datasets.ImageFolder(str(folder))
        images = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                              for p, _ in ref.samples])
        labels = torch.tensor([c for _, c in ref.samples])
        feeds = loaders(folder, images, labels)
        rows = {}
        for name, make in feeds.items():
            torch.manual_seed(0)
            model = build_model("resnet20", num_classes=10)
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            train_epoch(model, opt, (b for i, b in zip(range(2), make(), strict=False)))  # warm-up
            epochs = [timed(lambda make=make, model=model, opt=opt: train_epoch(model, opt, make())) for _ in range(args.repeats)]
            data_only = [timed(lambda make=make: sum(len(y) for _, y in make())) for _ in range(args.repeats)]
            rows[name] = (statistics.median(n / t for t, n in epochs), statistics.median(n / t for t, n in data_only))
    best_dl = max(v[0] for k, v in rows.items() if k != "tensors")
    print(f"# bench/loader.py: {what}, {len(labels)} images, batch {BATCH}, ResNet-20 SGD, "
          f"median of {args.repeats} epochs")
    print(f"# machine: {machine_info(args.threads)}")
    print(f"{'pipeline':<12} {'train img/s':>12} {'data-only img/s':>16} {'vs best DataLoader':>19}")
    for name, (train, data) in rows.items():
        print(f"{name:<12} {train:>12.1f} {data:>16.1f} {train / best_dl:>18.2f}x")
    print(f"\n# one CIFAR-10 epoch (45,000 training images), tensor pipeline, from {args.probe} timed batches")
    for arch in ("resnet20", "resnet18"):
        torch.manual_seed(0)
        model = build_model(arch, num_classes=10)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        train_epoch(model, opt, (b for i, b in zip(range(1), tensor_feed(images, labels, gen), strict=False)))
        t, n = timed(lambda m=model, o=opt, g=gen: train_epoch(
            m, o, (b for i, b in zip(range(args.probe), tensor_feed(images, labels, g), strict=False))))
        print(f"{arch:<10} {n / t:>8.1f} img/s  ->  {45000 / (n / t) / 60:6.1f} min per epoch")


if __name__ == "__main__":
    main()
