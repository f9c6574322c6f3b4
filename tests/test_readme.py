"""The README stays a guide that matches the code and the generated results."""
import re
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from readme import END, PUBLISHED, START, render, studies_table  # noqa: E402

README = (ROOT / "README.md").read_text()


def test_readme_is_a_short_guide():
    assert len(README.splitlines()) <= 200
    for heading in ("## The two commands", "## The pipeline", "## Configure", "## Compare", "## Share and scale"):
        assert heading in README


def test_results_block_is_the_generated_summary():
    summary = ROOT / "reports/summary.md"
    if not summary.is_file():
        pytest.skip("reports/summary.md is a DVC output: run `dvc repro` or `dvc pull` to check the README against it")
    assert render(README, summary.read_text()) == README, "run `python tools/readme.py` after `dvc repro`"


def test_studies_block_is_generated_and_lists_the_five_published_studies():
    studies = studies_table(ROOT / "studies")
    assert render(README, "x\n\nx\n\n" + README.split(START, 1)[1].split(END, 1)[0].strip(), studies) == README, \
        "run `python tools/readme.py` after committing a study's results"
    for name in PUBLISHED:
        assert f"| {name} |" in studies or f"[{name}]" in studies, name


def test_results_block_holds_one_table_with_every_default_artifact():
    block = README.split(START, 1)[1].split(END, 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("| main ")]
    artifacts = {cells.split("|")[2].strip() for cells in rows}
    assert {"pruned", "finetuned", "fp32", "fp16", "int8_static", "int8_qat", "fixed4", "onnx", "ort_int8"} <= artifacts
    assert re.search(r"Measured on .+ thread\(s\), torch", block)


def test_every_stage_and_tool_named_in_the_readme_exists():
    for script in re.findall(r"(?:stages|tools)/\w+\.py", README):
        assert (ROOT / script).is_file(), script
    for key in re.findall(r"`((?:prune|finetune|quantize|export|benchmark)\.\w+)(?![\w.])", README):
        section, name = key.split(".")
        if name in ("json", "csv", "pt"):  # a file such as `prune.json`, not a key
            continue
        assert re.search(rf"^{section}:\n(?:  .*\n|\s*#.*\n)*?  {name}:", (ROOT / "params.yaml").read_text(), re.M), key


def test_readme_tool_checks_the_studies_block_without_the_dvc_outputs(tmp_path):
    """A fresh clone has no reports/summary.md: the tool still checks (and updates) the studies block."""
    import shutil
    import subprocess

    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "studies", tmp_path / "studies", symlinks=True,
                    ignore=shutil.ignore_patterns("data", "models", "variants", "configs", ".dvc"))
    tool = [sys.executable, str(ROOT / "tools/readme.py"), "--check"]
    assert subprocess.run(tool, cwd=tmp_path).returncode == 0
    assert "| smoke, cpu, paper |" in README
    (tmp_path / "README.md").write_text(README.replace("| smoke, cpu, paper |", "| smoke |", 1))  # a stale block
    result = subprocess.run(tool, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "results block left as it is" in result.stderr


def test_a_finding_written_before_the_current_checks_is_marked(tmp_path):
    from readme import STALE, _finding

    old, new = tmp_path / "old.md", tmp_path / "new.md"
    old.write_text("# x\n\n**Finding.** it holds in 5 of 5 checks.\n")
    new.write_text("# x\n\n**Finding.** it holds in 3 of 5.\n\n## Published claims, checked on our rows\n")
    assert _finding(old) == "it holds in 5 of 5 checks." + STALE
    assert _finding(new) == "it holds in 3 of 5."
    assert _finding(tmp_path / "missing.md") is None
