"""Atomic writes (temp file in the same directory + rename).

An interrupted stage must never leave a half-written artifact that DVC could cache, so every
output of this package goes through these helpers.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnn_compress.core.errors import UserError

# Errors only a write can cause: raised inside the block, they are about the artifact being written
# (another OSError there may come from reading an input, and keeps its own message).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
_umask_lock = threading.Lock()


class WriteError(UserError):
    """An output could not be written (disk full, quota, read-only or unwritable folder)."""


def current_umask() -> int:
    """The process umask without changing it where Linux tells it (``/proc/self/status``);
    elsewhere set and restored at once, under a lock so no other writer here sees the 0o077."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    The file ends with the mode any tool would give it (0o666 less the umask), not ``mkstemp``'s
    0o600, so a shared cache or remote stays readable to the team. A full disk, a quota, a
    read-only or unwritable folder is one :class:`WriteError` naming ``path``; nothing is left.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise WriteError(_write_failed(path, exc)) from None
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as exc:
            if exc.errno in _WRITE_ERRNOS:
                raise WriteError(_write_failed(path, exc)) from None
            raise
        try:
            os.chmod(tmp_path, 0o666 & ~current_umask())
            os.replace(tmp_path, path)
        except OSError as exc:
            raise WriteError(_write_failed(path, exc)) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _write_failed(path: Path, exc: OSError) -> str:
    return f"{path}: cannot write it ({exc.strerror or exc}); nothing was written"


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """JSON in insertion order (deterministic in Python), so unchanged metrics hash the same and
    tables keep the pipeline's order."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_csv(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """CSV with the union of row keys as columns, in first-seen order (DVC tabular plots)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(_csv_cell(row.get(c, "")) for c in columns))
    write_text(path, "\n".join(lines) + "\n")


def _csv_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return f'"{text}"' if ("," in text or '"' in text) else text


def write_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save`` through a buffer: saving to a temp file would name the archive's root
    after the random temp name, and the same tensors would hash differently on every run."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())
