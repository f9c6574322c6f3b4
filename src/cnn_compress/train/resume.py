"""Continue an interrupted training run from its last completed epoch, bit for bit.

DVC deletes a stage's outputs before it runs the command, so the state lives outside them, in
``.resume/`` under the stage's working directory (``CNN_COMPRESS_RESUME_DIR`` moves it,
``CNN_COMPRESS_RESUME=0`` turns resuming off). There is one file per output being trained, named by
a digest of everything the run starts from: the resolved training settings, the initial weights and
buffers, the pruning masks and the data. A changed param or upstream artifact therefore never
picks up stale state; state of another configuration of the same output, or a file that does not
load, is dropped with a warning. The file is removed when training completes.

While it trains, a process holds a lock on its output (``<output>.lock`` beside the state): a second
process training the same output (a ``dvc repro`` started beside one still running) stops with one
line instead of writing the same state and output.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cnn_compress.core import atomic
from cnn_compress.core.config import to_dict
from cnn_compress.core.errors import BusyError

KEYS = ("epoch", "step", "history", "model", "optimizer", "generator", "torch_rng")


def _tensor_bytes(t: torch.Tensor) -> bytes:
    # a copy: exposing a module's own buffer to numpy would pin its storage, and fake-quantize
    # observers resize theirs in place
    t = t.detach().to("cpu", copy=True).contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """The library's code: a run resumed under other code would not end where a whole run does."""
    h = hashlib.blake2b(digest_size=8)
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def run_digest(cfg: Any, model: torch.nn.Module, data: tuple[torch.Tensor, ...],
               masks: dict[str, torch.Tensor], teacher: torch.nn.Module | None = None, extra: Any = None) -> str:
    """What a training run starts from, as 16 hex digits: equal digests, equal runs. ``extra``: what
    else shapes the run but lives outside the weights (a fixed-point format's settings, say)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps([to_dict(cfg), extra], sort_keys=True, default=str).encode())
    h.update(source_digest().encode())
    h.update(",".join(n for n, p in model.named_parameters() if p.requires_grad).encode())  # what trains
    for group in (model.state_dict(), masks, teacher.state_dict() if teacher is not None else {}):
        for name in sorted(group):
            h.update(f"{name}:{group[name].dtype}:{tuple(group[name].shape)}".encode())
            h.update(_tensor_bytes(group[name]))
    for t in data:
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class Resume:
    """The resume file of one output: load what a killed run left, save after every epoch."""

    def __init__(self, output: str | os.PathLike[str], digest: str) -> None:
        root = Path(os.environ.get("CNN_COMPRESS_RESUME_DIR", ".resume"))
        self.output = str(output)
        self.slug = str(Path(output)).replace(os.sep, "__").replace("/", "__").lstrip(".") or "run"
        self.path = root / f"{self.slug}.{digest}.pt"
        self.lock_path = root / f"{self.slug}.lock"  # per output, not per digest: any run of it writes it

    @classmethod
    def for_run(cls, output: str | os.PathLike[str] | None, cfg: Any, model: torch.nn.Module,
                data: tuple[torch.Tensor, ...], masks: dict[str, torch.Tensor],
                teacher: torch.nn.Module | None = None, extra: Any = None) -> Resume | None:
        if output is None or os.environ.get("CNN_COMPRESS_RESUME", "1") == "0":
            return None
        return cls(output, run_digest(cfg, model, data, masks, teacher, extra))

    def _others(self) -> list[Path]:
        if not self.path.parent.is_dir():
            return []
        return [p for p in self.path.parent.glob(f"*{self.slug}.*") if p != self.path and p != self.lock_path
                and (p.name.startswith(f"{self.slug}.") or p.name.startswith(f".{self.slug}."))]

    def load(self) -> dict[str, Any] | None:
        """The saved state of this very run, or None; anything else under this output's name goes."""
        for stale in self._others():
            if not stale.name.startswith("."):  # a half-written temp file needs no word
                _warn(f"{stale}: resume state of another configuration of {self.slug}, ignored and removed")
            stale.unlink(missing_ok=True)
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or set(KEYS) - set(state):
                raise ValueError("keys missing")
        except Exception as exc:  # truncated, not a torch file, another layout
            _warn(f"{self.path}: unreadable resume state ({type(exc).__name__}), ignored; training starts over")
            self.path.unlink(missing_ok=True)
            return None
        return state

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold this output's lock while training it; ``BusyError`` when another process holds it."""
        fd = self._lock()
        try:
            yield
        finally:
            self.lock_path.unlink(missing_ok=True)  # still ours: a process that opened it re-checks
            os.close(fd)
            with contextlib.suppress(OSError):  # another output's run may be using the folder
                if not any(self.path.parent.iterdir()):
                    self.path.parent.rmdir()

    def _lock(self) -> int:
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder went with another run's end: make it again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise BusyError(f"{self.lock_path}: another process (pid {holder}) is training {self.output} now; "
                                "wait for it or stop it, then run again") from None
            try:  # the file may have gone (its holder finished) between open and lock: lock the current one
                if os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino:
                    os.ftruncate(fd, 0)
                    os.write(fd, str(os.getpid()).encode())
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def save(self, state: dict[str, Any]) -> None:
        """Through a buffer (``atomic.write_torch``): ``torch.save`` straight to a file turns a full disk
        into a RuntimeError from its zip writer, where a plain write gives the one-line WriteError."""
        atomic.write_torch(self.path, state)

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.path.parent.is_dir() and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()
