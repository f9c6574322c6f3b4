"""Training and fine-tuning: SGD + momentum + weight decay + cosine schedule, on tensors.

With a fixed seed and thread count, CPU training is bit-for-bit reproducible (deterministic
algorithms, one generator for shuffling and augmentation, no time-dependent state), so re-running
an unchanged stage writes the same bytes and nothing downstream re-runs.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from cnn_compress.core.errors import ConfigError, DivergedError
from cnn_compress.data.dataset import Dataset, augment, batches, normalize
from cnn_compress.data.evaluation import predict_logits, score
from cnn_compress.train.config import TrainConfig
from cnn_compress.train.distill import distill_loss
from cnn_compress.train.resume import Resume


def setup_torch(seed: int, threads: int) -> None:
    """Seed everything and pin threads: the preconditions of reproducible CPU runs."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    # CPU kernels are deterministic already (tested byte for byte); the flag is for CUDA, and it
    # imports torch._dynamo, which costs every stage process about 4 s
    if torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' requested but CUDA is not available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cosine_lr(base: float, step: int, total: int) -> float:
    return 0.5 * base * (1 + math.cos(math.pi * step / max(total, 1)))


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights again (momentum would otherwise revive them)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)


def freeze(model: nn.Module, prefixes: tuple[str, ...]) -> int:
    """Fix the parameters under each module-name prefix; returns how many tensors were frozen.

    A prefix that matches nothing is a ``ConfigError`` (a typo would otherwise train everything).
    """
    params = dict(model.named_parameters())
    frozen = 0
    for prefix in prefixes:
        hits = [n for n in params if n == prefix or n.startswith(f"{prefix}.")]
        if not hits:
            top = sorted({n.split(".")[0] for n in params})
            raise ConfigError(f"model.freeze: {prefix!r} matches no parameter (top-level modules: {', '.join(top)})")
        for n in hits:
            params[n].requires_grad_(False)
            frozen += 1
    return frozen


def _hold_frozen_batchnorm(model: nn.Module) -> None:
    """BatchNorm layers with frozen affine parameters also keep their running statistics."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None and not m.weight.requires_grad:
            m.eval()


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size): joins the process group ``torchrun`` describes, else (0, 1).

    ``gloo`` on CPU, ``nccl`` on GPU (one GPU per process, ``LOCAL_RANK``).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def is_writer() -> bool:
    """Only rank 0 writes outputs under ``torchrun``; a plain run always does."""
    return not dist.is_initialized() or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


class Precision:
    """``amp``: autocast to bf16 / fp16 around the forward pass; fp16 also scales the loss so small
    gradients do not underflow (bf16 has float32's range and needs no scaler)."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        if cfg.amp == "fp16" and device.type != "cuda":
            raise ConfigError(f"{cfg.SECTION}.amp: fp16 autocast needs CUDA (use bf16 on the CPU)")
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        self.device = device.type
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()


def train_model(
    model: nn.Module,
    ds: Dataset,
    cfg: TrainConfig,
    masks: dict[str, torch.Tensor] | None = None,
    resume: str | os.PathLike[str] | None = None,
    teacher: nn.Module | None = None,
    stats: dict[str, float] | None = None,
    run_key: Any = None,
    label: str | None = None,
) -> list[dict[str, Any]]:
    """Train in place; return one row per epoch (loss, accuracy, val loss/accuracy, lr).

    ``resume`` names the output this run produces: after every epoch the full state (weights,
    optimizer, generator, RNG, history) is saved under that name, and a run killed mid-way
    continues from its last completed epoch to the same bytes (``train/resume.py``); a second
    process training the same output meanwhile stops with ``BusyError``. With a ``teacher`` and
    ``cfg.distill.weight`` > 0 the loss also matches the teacher's soft outputs.
    ``stats``, when given, receives the images trained on and the seconds the training steps took
    (validation excluded): the run's throughput, which never enters the returned history.
    ``run_key``: settings outside ``cfg`` and the weights that shape the run, for the resume key.
    ``label``: what trains, for the per-epoch log lines, the bar and errors (``cfg.SECTION`` when
    None: train, finetune; ``QAT``...). A non-finite loss or weight stops it with ``DivergedError``.

    Under ``torchrun`` each rank takes its share of every global batch (the same shuffled order
    on all ranks) and DistributedDataParallel averages the gradients, so ``batch_size`` stays the
    global batch and the schedule is the same as on one process.
    """
    device = resolve_device(cfg.device)
    rank, world = init_distributed(device)
    model.to(device)
    run = _Run(model, ds, cfg, device, rank, world, label or cfg.SECTION)
    run.masks = {k: v.to(device) for k, v in (masks or {}).items()}
    distill = getattr(cfg, "distill", None)
    run.teacher = teacher.to(device).eval() if teacher is not None and distill is not None and distill.weight else None
    state = Resume.for_run(resume if world == 1 else None, cfg, model, (run.x_all, run.y_all), run.masks,
                           run.teacher, run_key)
    if state is None:
        return run.epochs(None, stats)
    with state.held():  # one process per output: another `dvc repro` beside this one stops at once
        history = run.epochs(state, stats)
        state.finish()
    return history


class _Run:
    """One training run's fixed parts (data, optimizer, generators, schedule) and its epochs."""

    def __init__(self, model: nn.Module, ds: Dataset, cfg: TrainConfig, device: torch.device, rank: int,
                 world: int, label: str) -> None:
        self.model, self.ds, self.cfg, self.device, self.rank, self.world = model, ds, cfg, device, rank, world
        self.label = label
        self.net = model
        if world > 1:
            self.net = DistributedDataParallel(model, device_ids=[torch.cuda.current_device()]
                                               if device.type == "cuda" else None)
        self.masks: dict[str, torch.Tensor] = {}
        self.teacher: nn.Module | None = None
        self.x_all, self.y_all = (t.to(device) for t in ds.split("train"))
        self.opt = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay,
        )
        self.order = torch.Generator().manual_seed(cfg.seed)  # identical on every rank: the same batches
        self.aug = self.order if world == 1 else torch.Generator().manual_seed(cfg.seed + 7919 * (rank + 1))
        per_epoch = math.ceil(len(self.y_all) / cfg.batch_size)
        self.per_epoch = min(per_epoch, cfg.steps_per_epoch) if cfg.steps_per_epoch else per_epoch
        self.total = cfg.epochs * self.per_epoch
        self.precision = Precision(cfg, device)

    def epochs(self, state: Resume | None, stats: dict[str, float] | None) -> list[dict[str, Any]]:
        cfg, model = self.cfg, self.model
        start, step, history = _restore(state, model, self.opt, self.order, self.precision)
        on_terminal = sys.stderr.isatty() and self.rank == 0
        bar = tqdm(range(start, cfg.epochs), desc=self.label, unit="epoch", initial=start, total=cfg.epochs,
                   disable=not on_terminal)
        for epoch in bar:
            started = time.perf_counter()
            step, lr, sums = self.epoch(epoch, step)
            loss_sum, correct, seen = sums.tolist()
            seconds = time.perf_counter() - started
            if stats is not None:
                stats["images"] = stats.get("images", 0.0) + seen
                stats["seconds"] = stats.get("seconds", 0.0) + seconds
            self.check_finite(epoch, loss_sum / max(seen, 1))
            row = {"epoch": epoch + 1, "lr": round(lr, 8), "train_loss": round(loss_sum / max(seen, 1), 6),
                   "train_acc": round(100.0 * correct / max(seen, 1), 4)}
            if len(self.ds.splits["val"]):
                val = evaluate(model, self.ds, "val")
                row |= {"val_loss": val["loss"], "val_acc": val["top1"]}
            history.append(row)
            bar.set_postfix(loss=row["train_loss"], val_acc=row.get("val_acc"))
            if self.rank == 0:  # one line per epoch in logs too, where no bar is drawn
                line = epoch_line(self.label, row, cfg.epochs, time.perf_counter() - started)
                if on_terminal:
                    bar.write(line, file=sys.stderr)
                else:
                    print(line, file=sys.stderr, flush=True)
            if state is not None:
                state.save({"epoch": epoch + 1, "step": step, "history": history, "optimizer": self.opt.state_dict(),
                            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                            "generator": self.order.get_state(), "torch_rng": torch.get_rng_state(),
                            "scaler": self.precision.scaler.state_dict() if self.precision.scaler else {}})
        model.cpu().eval()
        return history

    def epoch(self, epoch: int, step: int) -> tuple[int, float, torch.Tensor]:
        """One pass: (step after it, last lr, [loss * n, correct, n] summed over every rank)."""
        cfg, model, ds, world = self.cfg, self.model, self.ds, self.world
        model.train()
        _hold_frozen_batchnorm(model)
        sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n
        lr = cfg.lr
        for i, idx in enumerate(batches(len(self.y_all), cfg.batch_size, self.order)):
            if i >= self.per_epoch:  # the shuffled order still advances: the next epoch sees other images
                break
            if len(idx) < 2 * world:  # BatchNorm cannot train on a single image per rank
                continue
            idx = idx[self.rank::world].to(self.device)
            lr = cosine_lr(cfg.lr, step, self.total)
            for group in self.opt.param_groups:
                group["lr"] = lr
            x = augment(normalize(self.x_all[idx], ds.mean, ds.std), cfg.crop_pad, cfg.flip, self.aug, cfg.cutout)
            y = self.y_all[idx]
            with self.precision.autocast():  # the forward passes; the losses in float32
                logits = self.net(x)
                with torch.no_grad():
                    soft = self.teacher(x) if self.teacher is not None else None
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if soft is not None:
                loss = distill_loss(logits.float(), soft.float(), loss, cfg.distill)  # type: ignore[attr-defined]
            value = loss.item()
            if world == 1 and not math.isfinite(value):  # under torchrun every rank stops at the epoch's end
                raise self.diverged(epoch, f"loss {value} at step {i + 1}")
            self.precision.step(loss, self.opt)
            if self.masks:
                apply_masks(model, self.masks)
            step += 1
            sums += torch.tensor([value * len(y), (logits.argmax(1) == y).sum().item(), len(y)])
        if world > 1:
            dist.all_reduce(sums)
        return step, lr, sums

    def check_finite(self, epoch: int, mean_loss: float) -> None:
        """A NaN or infinite loss or weight ends the run here, before its state is saved."""
        if not math.isfinite(mean_loss):
            raise self.diverged(epoch, f"mean loss {mean_loss}")
        for name, t in self.model.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise self.diverged(epoch, f"weight {name} is not finite")

    def diverged(self, epoch: int, what: str) -> DivergedError:
        stage = os.environ.get("DVC_STAGE")
        where = f"{self.label} (stage {stage})" if stage else self.label
        return DivergedError(f"{where}: training diverged in epoch {epoch + 1}/{self.cfg.epochs} ({what}); "
                             f"lower the learning rate (lr {self.cfg.lr:g}) and run again")


def epoch_line(label: str, row: dict[str, Any], epochs: int, seconds: float) -> str:
    """``finetune epoch 2/5: loss 0.1234, train 97.10%, val 98.00%, lr 0.005, 3.1 s``: the log's
    record of a run, one line per epoch (the bar is drawn on terminals only)."""
    val = f", val {row['val_acc']:.2f}%" if "val_acc" in row else ""
    return (f"{label} epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}, train {row['train_acc']:.2f}%"
            f"{val}, lr {row['lr']:.3g}, {seconds:.1f} s")


def _restore(state: Resume | None, model: nn.Module, opt: torch.optim.Optimizer, order: torch.Generator,
             precision: Precision) -> tuple[int, int, list[dict[str, Any]]]:
    """(first epoch, step, history): from the saved state of a killed run, else from the start."""
    saved = state.load() if state is not None else None
    if saved is None:
        return 0, 0, []
    before = copy.deepcopy((model.state_dict(), opt.state_dict(), order.get_state(), torch.get_rng_state()))
    try:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        order.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if precision.scaler is not None and saved.get("scaler"):
            precision.scaler.load_state_dict(saved["scaler"])
    except Exception as exc:  # a state that does not fit this model: never half-applied
        print(f"warning: {state.path}: resume state does not fit this run ({type(exc).__name__}), ignored; "
              "training starts over", file=sys.stderr)
        model.load_state_dict(before[0])
        opt.load_state_dict(before[1])
        order.set_state(before[2])
        torch.set_rng_state(before[3])
        state.path.unlink(missing_ok=True)
        return 0, 0, []
    print(f"resuming after epoch {saved['epoch']} from {state.path}", file=sys.stderr)
    return int(saved["epoch"]), int(saved["step"]), list(saved["history"])


def images_per_s(stats: dict[str, float]) -> float | None:
    """Training throughput of a run (``train_model(stats=...)``); None when nothing was trained.
    One process, one run: compare runs of the same machine and load, as ratios."""
    return round(stats["images"] / stats["seconds"], 1) if stats.get("seconds") else None


def evaluate(model: nn.Module, ds: Dataset, split: str = "test", batch_size: int = 256) -> dict[str, float]:
    """Top-1 / top-5 / loss of a torch model on one split of a prepared data set."""
    model.eval()
    param = next(model.parameters())
    images, labels = ds.split(split)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device=param.device, dtype=param.dtype))

    return score(predict_logits(predict, images, ds.mean, ds.std, batch_size), labels)
