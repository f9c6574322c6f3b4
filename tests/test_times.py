"""The README's stated times are the committed measurements (tools/times.py), not hand-written."""
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from times import SPEED, TIMES, realdata_block, render, times_block  # noqa: E402

README = (ROOT / "README.md").read_text()


def test_readme_times_are_the_generated_ones():
    blocks = {"times": times_block(), "realdata-time": realdata_block()}
    assert render(README, blocks) == README, "run `python tools/times.py`"
    assert SPEED.is_file() and "`dvc repro` " in blocks["times"]
    assert TIMES.is_file() and "CPU-min" in blocks["realdata-time"]


def test_times_block_reads_both_generated_tables(tmp_path):
    speed, times = tmp_path / "speed.md", tmp_path / "times.md"
    speed.write_text("machine: x86_64, 2 cores\n\n| run | wall s |\n|---|---:|\n| full dvc repro (params.yaml) | 300.0 |\n")
    times.write_text("| what | command | wall min | CPU min | result | cores | load at start |\n|---|---|---:|---:|---|---:|---:|\n"
                     "| study a, smoke | `x` | 2.5 | 3.0 |  | 2 | 0.1 |\n| study b, smoke | `y` | 4.0 | 5.0 |  | 2 | 0.1 |\n"
                     "| real-data recipe, 500 images per class, 1 fine-tune epoch(s) | `z` | 9.0 | 12.0 | top-1 81% | 2 | 1.0 |\n")
    assert times_block(speed, times) == ("`dvc repro` 5.0 min on 2 cores (`docs/pipeline-speed.md`); "
                                         "a study's smoke 3.0-5.0 CPU-min (2 studies, `docs/times.md`)")
    assert realdata_block(times).startswith("12.0 CPU-min (9.0 min wall on 2 cores at load 1.0; top-1 81%")
    assert "not measured yet" in realdata_block(tmp_path / "missing.md")
