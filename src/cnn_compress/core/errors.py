"""User-facing errors: one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input the user can fix: wrong params, missing or corrupt data and checkpoints."""


class ConfigError(UserError):
    """A params.yaml key is unknown, has the wrong type or an impossible value."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or not one of ours."""


class DataError(UserError):
    """A data set is missing, corrupt or inconsistent."""


class UnsupportedFormatError(UserError):
    """A quantization or export format this machine cannot produce or run."""


class DivergedError(UserError):
    """A training produced a non-finite loss or weights: its settings (the learning rate, most
    often) make it diverge, and a NaN model must not flow on into quantization and benchmarks."""


class BusyError(UserError):
    """Another process is writing the same output (a stage still running beside a new ``dvc repro``)."""


def cli(func: F) -> F:
    """Turn :class:`UserError` into ``error: <message>`` and exit 2 for stage scripts."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        from cnn_compress.core.stage import die_with_parent, quiet_torch_logs

        quiet_torch_logs()
        if os.environ.get("DVC_STAGE"):  # run by dvc (which sets it): end with dvc, even on its SIGKILL
            die_with_parent()
        try:
            result = func(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)
        if os.environ.get("DVC_STAGE"):
            exit_without_teardown()
        return result

    return wrapper  # type: ignore[return-value]


def exit_without_teardown() -> None:
    """End a finished stage process at once: exit handlers run, buffers are flushed, and Python's own
    teardown (freeing every module of torch, its libraries' destructors) is skipped: it took 0.7 s
    of the ~2.5 s a tiny stage runs, in every stage process dvc starts. Only for a process dvc
    started for one stage (DVC_STAGE), never for a script run inside another program."""
    import atexit
    import gc
    import threading

    shutdown, run_handlers = getattr(threading, "_shutdown", None), getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or run_handlers is None:  # CPython's own; elsewhere, the usual exit
        return
    # As Python's own exit does first: stop thread pools (their exit hooks) and join non-daemon threads.
    # Joining alone hung the export stage on a thread pool's idle worker.
    shutdown()
    _drop_unlogged_dynamo_report(atexit)
    run_handlers()  # temporary folders, logging: everything that registered a handler
    gc.collect()  # a file left open in a reference cycle is closed (and flushed) by its finaliser
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _drop_unlogged_dynamo_report(atexit_module: object) -> None:
    """torch._dynamo's exit handler builds its compile-time table (importing ``tabulate``: 0.3 s)
    in every process that imported it, then logs it at INFO, which nobody sees unless TORCH_LOGS
    asks: skip it then. Logged as usual when its logger is on."""
    import logging

    utils = sys.modules.get("torch._dynamo.utils")
    report = getattr(utils, "dump_compile_times", None)
    if report is not None and not logging.getLogger(utils.__name__).isEnabledFor(logging.INFO):
        atexit_module.unregister(report)
