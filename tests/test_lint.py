import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deps_util import ROOT


def test_ruff_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    proc = subprocess.run([ruff, "check", "src", "stages", "tests", "bench", "tools"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_stage_scripts_stay_thin():
    for script in (ROOT / "stages").glob("*.py"):
        assert len(script.read_text().splitlines()) < 60, script.name
