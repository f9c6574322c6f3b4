"""The suite's warm ``python`` (tests/warm/) must behave as the real one for a stage command: same
output, exit code, working directory, environment, umask and paths; tracebacks and signals as Python's;
a stage whose caller is killed is ended. Otherwise the stage tests would prove less than they say."""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import warm_python

SCRIPT = """
import os, sys
print(sys.argv, os.getcwd(), os.environ.get("ASKED"), sys.path[:2], oct(os.umask(0o22)), __name__)
print("torch already imported:", "torch" in sys.modules, file=sys.stderr)
import helper
print(helper.VALUE, sys.stdin.read().strip())
if sys.argv[1] == "raise":
    raise ValueError("boom")
if sys.argv[1] == "wait":
    from pathlib import Path
    import signal, time
    signal.signal(signal.SIGTERM, lambda *_: (Path("terminated").write_text("yes"), os._exit(143)))
    Path("started").write_text(str(os.getpid()))
    time.sleep(60)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    if "CNN_COMPRESS_WARM_PYTHON" not in warm_python():
        pytest.skip("CNN_COMPRESS_TEST_COLD=1: the warm interpreter is off")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages/probe.py").write_text(SCRIPT)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/helper.py").write_text("VALUE = 'from PYTHONPATH'\n")
    return tmp_path


def _env(warm: bool) -> dict[str, str]:
    env = os.environ | warm_python() | {"ASKED": "yes"}
    if not warm:
        env.pop("CNN_COMPRESS_WARM_PYTHON")
    return env


def _run(project: Path, arg: str, warm: bool) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", f"umask 027; PYTHONPATH=lib python stages/probe.py {arg}"], cwd=project,
                          env=_env(warm), input="from stdin", capture_output=True, text=True, timeout=120)


def _start_waiting(project: Path) -> subprocess.Popen:
    """The probe waiting in a stage, its command the process that ``sh`` execs (a signal's target)."""
    return subprocess.Popen(["sh", "-c", "PYTHONPATH=lib exec python stages/probe.py wait"], cwd=project,
                            env=_env(warm=True), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _warm_ready(project: Path) -> None:
    deadline = time.monotonic() + 120
    while "torch already imported: True" not in _run(project, "0", warm=True).stderr:
        assert time.monotonic() < deadline, "the warm server did not start"
        time.sleep(0.5)


def test_a_stage_runs_warm_as_it_runs_cold(project):
    _warm_ready(project)
    runs = {arg: (_run(project, arg, warm=True), _run(project, arg, warm=False)) for arg in ("0", "3", "raise")}
    for arg, (warm, cold) in runs.items():
        assert (warm.returncode, warm.stdout) == (cold.returncode, cold.stdout), arg
        assert "torch already imported: True" in warm.stderr and "torch already imported: False" in cold.stderr
    warm = runs["3"][0]
    assert warm.returncode == 3 and "['stages/probe.py', '3'] " in warm.stdout and "0o27 __main__" in warm.stdout
    assert f"{project} yes ['{project}/stages', '{project}/lib']" in warm.stdout
    assert "from PYTHONPATH from stdin" in warm.stdout
    raised = runs["raise"][0]
    assert raised.returncode == 1 and "Traceback" in raised.stderr and "ValueError: boom" in raised.stderr


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_signal_to_the_stage_command_reaches_the_stage(project, sig):
    """SIGKILL of the command (dvc killed, its stage's parent gone): the stage gets SIGTERM, as
    PR_SET_PDEATHSIG gives it. SIGINT: forwarded, and the command dies of it as Python would."""
    _warm_ready(project)
    proc = _start_waiting(project)
    deadline = time.monotonic() + 60
    while not (project / "started").exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    pid = int((project / "started").read_text())
    assert pid != proc.pid  # the stage is the warm server's child, not the command's process
    os.kill(proc.pid, sig)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]:
        assert time.monotonic() < deadline, "the stage outlived its command"
        time.sleep(0.05)
    if sig == signal.SIGKILL:
        assert (project / "terminated").read_text() == "yes"
    else:
        assert proc.returncode == -signal.SIGINT and "KeyboardInterrupt" in proc.stderr.read()


def test_commands_other_than_stages_run_the_real_python(project):
    env = os.environ | warm_python()
    out = subprocess.run(["python", "-c", "import sys; print(sys.executable, 'torch' in sys.modules)"], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [sys.executable, "False"]


def test_a_stage_that_cannot_start_fails_in_one_command_and_the_server_goes_on(project, tmp_path):
    """A request whose working directory is gone when the child starts: that command gets exit 1 and
    a traceback, the server serves the next one; a removed working directory on the caller's side
    runs the script as the real python does (it does not need one)."""
    _warm_ready(project)
    script = str(project / "stages/probe.py")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(_env(warm=True)["CNN_COMPRESS_WARM_PYTHON"])
    err = (tmp_path / "stderr").open("w+")
    request = json.dumps({"argv": [script, "0"], "cwd": str(tmp_path / "gone"), "env": dict(os.environ),
                          "umask": 0o22}).encode()
    with open(os.devnull) as null:
        socket.send_fds(conn, [struct.pack("!I", len(request)) + request], [null.fileno(), null.fileno(), err.fileno()])
    replies = conn.makefile("rb")
    assert replies.readline().startswith(b"pid ") and replies.readline() == b"exit 1\n"
    err.seek(0)
    assert "FileNotFoundError" in err.read()
    assert _run(project, "3", warm=True).returncode == 3
    runs = []
    for warm in (True, False):  # the probe asks for its working directory: the same error either way
        (gone := tmp_path / f"removed-{warm}").mkdir()
        runs.append(subprocess.run(["sh", "-c", f"cd {gone} && rmdir {gone} && python {script} 3"], env=_env(warm),
                                   input="", capture_output=True, text=True, timeout=60))
    assert [r.returncode for r in runs] == [1, 1]
    assert all(r.stderr.rstrip().endswith("FileNotFoundError: [Errno 2] No such file or directory") for r in runs)
