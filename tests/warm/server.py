"""A warm Python for the stage processes the test suite's ``dvc`` runs start.

Every stage process imports torch and its companions before it does anything: 2.5-4 s on the CUDA
wheel, in each of the ~330 stage processes of a test run, about half of what the stages cost. This
server imports those third-party libraries once and then forks a child per stage command that the
``python`` shim (``client.py``) hands it: the child takes over the command's standard streams,
working directory, environment, umask and arguments, and runs the script as ``python script.py``
would (``runpy``, ``sys.path`` from PYTHONPATH, exit code, uncaught exceptions through
``sys.excepthook``). The project's own code is never imported here, so each stage imports it fresh
from its test project; nothing runs here beyond imports, so a child starts where a new process
would after the same imports (RNG unseeded, no thread pools).

A child (W) is started by a per-request handler (H, forked from the server) that waits for either W
to end, to report its status, or for the shim's connection to close (the shim was killed) to stop
W with SIGTERM, as PR_SET_PDEATHSIG does for a real stage. Tests that check what a real process does
at start or at death (signals, warnings printed on import) start their processes themselves or run
with ``@pytest.mark.cold``.
"""
from __future__ import annotations

import atexit
import faulthandler
import importlib
import json
import os
import runpy
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback

# Imported once for all stage processes. Not onnxruntime, openvino or nncf: each starts threads on
# import, and a fork keeps only the forking thread (a lock one of them held would never be released).
PREIMPORT = ("torch", "torchvision", "numpy", "pandas", "yaml", "tqdm", "PIL.Image", "onnx", "onnxscript",
             "onnxscript.function_libs.torch_lib.ops", "torch.export", "torch.onnx", "torch._functorch.aot_autograd",
             "torch._inductor.pattern_matcher", "torchao", "torchao.quantization.pt2e",
             "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer", "torch_pruning", "matplotlib",
             "matplotlib.pyplot", "tabulate")  # tabulate: torch._dynamo's exit handler imports it


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def main(path: str) -> None:
    for name in PREIMPORT:
        importlib.import_module(name)
    if threads() != 1:  # fork would be unsafe: serve nothing (the shim then starts a real python)
        sys.exit(f"warm python: {threads()} threads after the imports; not serving")
    base_path = [p for p in sys.path if p != os.path.dirname(os.path.abspath(__file__))]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path + ".tmp")
    server.listen(64)
    os.rename(path + ".tmp", path)  # clients connect only once it listens
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    parent = os.getppid()
    sys.stdout.flush()
    sys.stderr.flush()
    while os.getppid() == parent:  # ends with the pytest worker that started it
        if not select.select([server], [], [], 1.0)[0]:
            continue
        conn, _ = server.accept()
        if os.fork() == 0:
            try:  # a forked process never returns into this loop, whatever goes wrong in it
                server.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                handle(conn, base_path)
            finally:
                os._exit(1)
        conn.close()


def receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    (size,) = struct.unpack("!I", data[:4])
    data = data[4:]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError("the shim closed before its request was complete")
        data += chunk
    return json.loads(data), fds


def handle(conn: socket.socket, base_path: list[str]) -> None:
    """H: start W, then report its status to the shim, or stop it when the shim is gone."""
    try:
        request, fds = receive(conn)
    except (OSError, EOFError, ValueError):
        os._exit(1)
    pid = os.fork()
    if pid == 0:
        try:
            conn.close()
            run(request, fds, base_path)  # ends the process itself
        except BaseException:  # noqa: BLE001  before the script started (a working directory gone, say)
            traceback.print_exc()
        finally:
            os._exit(1)
    for fd in fds:
        os.close(fd)
    conn.sendall(f"pid {pid}\n".encode())
    waiter = os.pidfd_open(pid)
    while True:
        ready = select.select([conn, waiter], [], [])[0]
        if waiter in ready:
            break
        if not conn.recv(64):  # the shim died (SIGKILL, say): end W as a dead parent would
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    report = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.waitstatus_to_exitcode(status)}"
    conn.sendall(f"{report}\n".encode())
    os._exit(0)


def run(request: dict, fds: list[int], base_path: list[str]) -> None:
    """W: become ``python <argv>`` in the shim's place, then exit as that process would."""
    for sig, handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL),
                         (signal.SIGCHLD, signal.SIG_DFL), (signal.SIGPIPE, signal.SIG_IGN)):
        signal.signal(sig, handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = request["argv"]
    script = argv[0]
    extra = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [os.path.dirname(os.path.abspath(script)), *extra, *base_path]
    importlib.invalidate_caches()
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    sys.argv = list(argv)
    sys.stdout.reconfigure(line_buffering=os.isatty(1), write_through=bool(os.environ.get("PYTHONUNBUFFERED")))
    if os.environ.get("PYTHONFAULTHANDLER"):
        faulthandler.enable()
    else:
        faulthandler.disable()
    code, start = 0, time.monotonic()
    atexit.register(log_time, argv, start)  # first registered, last to run
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exit_code(exc.code)
    except KeyboardInterrupt:  # as Python does: its traceback, then die of SIGINT for the caller to see
        sys.excepthook(*sys.exc_info())
        flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:  # noqa: BLE001  what an uncaught exception does at the top of a script
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()  # non-daemon threads, then exit handlers: Python's order on exit
    atexit._run_exitfuncs()
    flush()
    os._exit(code)


def log_time(argv: list[str], start: float) -> None:
    """CNN_COMPRESS_WARM_LOG=<file>: a line per stage (seconds, command) to see where a test's time goes."""
    if path := os.environ.get("CNN_COMPRESS_WARM_LOG"):
        with open(path, "a") as log:
            cpu = sum(os.times()[:2])  # this process's user + system seconds (its children's apart)
            log.write(f"{time.monotonic() - start:.2f}\t{cpu:.2f}\t{os.environ.get('DVC_STAGE', '-')}\t{' '.join(argv)}\n")


def exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            traceback.print_exc(file=sys.__stderr__)


if __name__ == "__main__":
    main(sys.argv[1])
