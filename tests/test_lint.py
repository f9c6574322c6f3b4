import shutil
import subprocess

import pytest
from deps_util import ROOT


def test_ruff_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    proc = subprocess.run([ruff, "check", "src", "stages", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_stage_scripts_stay_thin():
    for script in (ROOT / "stages").glob("*.py"):
        assert len(script.read_text().splitlines()) < 60, script.name
