# The `python` that the suite's dvc runs find first on PATH (conftest writes it, with this
# interpreter after `#!`, run with -I -S: standard library only, ~20 ms). A stage command
# (`python .../stages/<name>.py ...`) is handed to the warm server (server.py) with this process's
# standard streams; anything else, or no server, is the real python, exec'd in place.
import json
import os
import re
import signal
import socket
import struct
import sys

REAL = os.environ.get("CNN_COMPRESS_REAL_PYTHON", "")
SOCKET = os.environ.get("CNN_COMPRESS_WARM_PYTHON", "")
args = sys.argv[1:]


def real() -> None:
    os.execv(REAL, [REAL, *args])


def main() -> None:
    if not SOCKET or not args or not re.search(r"(^|/)stages/\w+\.py$", args[0]) or not os.path.isfile(args[0]):
        real()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(SOCKET)
    except OSError:
        real()  # not started yet, or gone
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    umask = os.umask(0)
    os.umask(umask)
    try:
        cwd = os.getcwd()
    except OSError:  # a working directory removed under us: Python itself still runs a script by path
        real()
    request = json.dumps({"argv": args, "cwd": cwd, "env": dict(os.environ), "umask": umask}).encode()
    socket.send_fds(conn, [struct.pack("!I", len(request)) + request], fds)
    replies = conn.makefile("rb")
    line = replies.readline().split()
    if not line:
        real()  # the server could not start the child: nothing has run yet
    pid = int(line[1])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGABRT, signal.SIGUSR1,
                signal.SIGUSR2):
        signal.signal(sig, lambda number, _frame: os.kill(pid, number))
    line = replies.readline().split()
    if not line:
        print("warm python: the stage's handler ended without its exit status", file=sys.stderr)
        sys.exit(1)
    kind, value = line[0], int(line[1])
    if kind == b"signal":  # die of the same signal, as the stage did
        signal.signal(value, signal.SIG_DFL)
        os.kill(os.getpid(), value)
        sys.exit(128 + value)
    sys.exit(value)


main()
