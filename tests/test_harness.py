"""The test harness itself: a hung command fails its test quickly and says where it hung."""
import sys

import conftest
import pytest


def test_a_hung_command_fails_with_the_stack_of_every_python_process_in_its_group(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "COMMAND_TIMEOUT", 3.0)
    child = "import time\ndef stuck_in_child():\n    time.sleep(60)\nstuck_in_child()\n"
    parent = ("import subprocess, sys\ndef waiting_in_parent():\n"
              f"    subprocess.run([sys.executable, '-c', {child!r}])\nwaiting_in_parent()\n")
    with pytest.raises(AssertionError, match="still running after 3 s") as failed:
        conftest.run([sys.executable, "-c", parent], cwd=tmp_path)
    message = str(failed.value)
    assert "stuck_in_child" in message and "waiting_in_parent" in message  # both processes' stacks
