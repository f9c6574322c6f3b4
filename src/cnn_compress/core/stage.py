"""Stage plumbing: where a variant's files live, and a command line that answers ``--help``."""
from __future__ import annotations

import argparse
import ctypes
import functools
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PREPARED = Path("data/prepared")
BASELINE = Path("models/baseline.pt")


@dataclass(frozen=True)
class VariantPaths:
    """Every path of one variant: its resolved configs, artifacts, details and metrics."""

    name: str

    def config(self, stage: str) -> Path:
        return Path("configs") / self.name / f"{stage}.json"

    @property
    def root(self) -> Path:
        return Path("variants") / self.name

    @property
    def pruned(self) -> Path:
        return self.root / "pruned.pt"

    @property
    def finetuned(self) -> Path:
        return self.root / "finetuned.pt"

    @property
    def quantized(self) -> Path:
        return self.root / "quantized"

    @property
    def exported(self) -> Path:
        return self.root / "exported"

    @property
    def compressed(self) -> Path:
        return self.root / "compressed"

    @property
    def metrics(self) -> Path:
        """One small JSON per artifact: the key figures ``dvc metrics show`` lists."""
        return Path("metrics") / self.name


def parse_args(doc: str, variant: bool = True, argv: list[str] | None = None, study: bool = False) -> argparse.Namespace:
    """The stage's command line: ``doc`` (the script's docstring: what it reads and writes) is the
    ``--help`` text; variant stages take the variant's name, as dvc.yaml's foreach passes it."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if variant:
        parser.add_argument("variant", help="the variant's name (a key of `variants` in params.yaml)")
    if study:
        parser.add_argument("study", help="the study's name (a key of `study` in params.yaml)")
    return parser.parse_args(argv)


def variant_paths(doc: str, argv: list[str] | None = None) -> VariantPaths:
    return VariantPaths(parse_args(doc, argv=argv).variant)


PR_SET_PDEATHSIG = 1  # linux/prctl.h
SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "mksh", "fish", "busybox"}


def _parent_of(pid: int) -> int | None:
    """The parent of process ``pid`` (Linux /proc), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after the command name, which may hold spaces: state, ppid


def _name_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def die_with_parent(interval: float = 0.5) -> None:
    """End this stage process when the ``dvc repro`` that started it ends, even by SIGKILL.

    Otherwise the stage goes on re-parented to init, and the next ``dvc repro`` runs the same stage
    beside it, both writing its resume state and outputs. The kernel sends SIGTERM when the parent
    dies (PR_SET_PDEATHSIG); DVC starts the command through ``$SHELL -c``, and a shell that does not
    exec its last command (dash) stays alive when dvc dies, so a thread also watches whether the
    parent, or a shell parent's own parent, went away (re-parented: its parent id changed).
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the watcher below still ends it, a little later
    grandparent = _parent_of(parent) if _name_of(parent) in SHELLS else None

    def watch() -> None:
        while True:
            orphaned = os.getppid() != parent or (grandparent is not None and _parent_of(parent) != grandparent)
            if orphaned:
                print("error: the dvc process that ran this stage is gone; stopping", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(interval)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


# Two torch log records every run of some stages printed, neither actionable: torch.compile's import of
# cpp_extension on a machine with nvcc but no GPU, and torchao's import registering an Enum with
# _pytree (a deprecation torchao has to act on). Logger -> the start of the message dropped.
QUIET_TORCH_LOGS = {
    "torch.utils.cpp_extension": "No CUDA runtime is found",
    "torch.utils._pytree": "%s is an Enum subclass and is now natively supported",
}


@functools.cache
def quiet_torch_logs() -> None:
    """Drop exactly those records (filters on the two loggers; every other record still shows)."""
    for name, text in QUIET_TORCH_LOGS.items():
        logging.getLogger(name).addFilter(lambda record, text=text: not str(record.msg).startswith(text))
