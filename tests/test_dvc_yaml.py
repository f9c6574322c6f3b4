"""dvc.yaml stays honest and readable: each stage depends on the package folders it imports, no
more, and the floors hold (an edit to quantization never re-runs prepare or train...)."""
import ast
import re

import pytest
import yaml
from deps_util import ROOT, covers, module_closure, stage_script

TEXT = (ROOT / "dvc.yaml").read_text()
PLACE = yaml.safe_load((ROOT / "place.yaml").read_text())  # the root's values of dvc.yaml's vars
LIB, UP = PLACE["lib"], PLACE["up"]
DVC = {name: spec.get("do", spec) for name, spec in
       yaml.safe_load(TEXT.replace("${up}", UP))["stages"].items()}


def deps(stage: str) -> set[str]:
    return {d.replace("${lib}", LIB) for d in DVC[stage]["deps"]}


def lib_deps(stage: str) -> set[str]:
    return {d for d in deps(stage) if d.startswith("src/")}


def test_dvc_yaml_is_short_and_hand_written():
    assert len(TEXT.splitlines()) <= 150
    assert not (ROOT / "tools/sync_dvc_yaml.py").exists()


@pytest.mark.parametrize("stage", sorted(DVC))
def test_deps_cover_what_the_script_imports_and_nothing_more(stage):
    spec = DVC[stage]
    assert spec["cmd"].startswith("PYTHONPATH=src python stages/")
    script = stage_script(spec["cmd"])
    assert str(script.relative_to(ROOT)) in deps(stage)
    imported = module_closure(script)
    if "${lib}/studies/${key}" in DVC[stage]["deps"]:  # the study stage imports its study by name
        studies = [p.parent for p in (ROOT / LIB / "studies").glob("*/__init__.py")]
        assert studies, "no study packages"
        for package in studies:
            imported |= module_closure(package / "__init__.py") | {str((package / "__init__.py").relative_to(ROOT))}
        imported = {f.replace(f"{LIB}/studies/{p.name}/", f"{LIB}/studies/${{key}}/") for f in imported
                    for p in studies if f.startswith(f"{LIB}/studies/{p.name}/")} | {
            f for f in imported if not any(f.startswith(f"{LIB}/studies/{p.name}/") for p in studies)}
    missing = sorted(f for f in imported if not any(covers(d, f) for d in lib_deps(stage)))
    assert not missing, f"{stage}: add deps covering {missing}"
    needless = sorted(d for d in lib_deps(stage) if not any(covers(d, f) for f in imported))
    assert not needless, f"{stage}: {needless} are deps but nothing in them is imported (needless re-runs)"


@pytest.mark.parametrize(("edited", "never"), [
    ("src/cnn_compress/quantize/formats.py", ["prepare", "train", "prune", "finetune", "export"]),
    ("src/cnn_compress/quantize/config.py", ["prepare", "train", "prune", "finetune", "export", "benchmark"]),
    ("src/cnn_compress/export/exporters.py", ["prepare", "train", "quantize", "benchmark"]),
    ("src/cnn_compress/prune/pruning.py", ["prepare", "train", "export", "benchmark"]),
    ("src/cnn_compress/measure/benchmark.py", ["prepare", "train", "prune", "finetune", "quantize", "export"]),
    ("src/cnn_compress/report/figures.py", ["prepare", "train", "prune", "finetune", "quantize", "export", "benchmark"]),
])
def test_an_edit_reruns_only_the_stages_that_use_it(edited, never):
    for stage in never:
        assert not any(covers(d, edited) for d in deps(stage)), f"editing {edited} would re-run {stage}"


def test_variant_stages_read_their_resolved_config_not_params_yaml():
    for stage in ("prune", "finetune", "quantize", "export", "benchmark"):
        assert "params" not in DVC[stage], stage
        assert f"configs/${{key}}/{stage}.json" in DVC[stage]["deps"]


def test_nothing_in_src_or_tools_imports_from_tests():
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "tools").rglob("*.py"), *(ROOT / "stages").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(re.match(r"(tests|conftest|deps_util)\b", n) for n in names), path
        assert "tests" not in re.findall(r"sys\.path[^\n]*?['\"](\w+)['\"]", path.read_text()), path


def test_outputs_are_written_by_their_stage():
    """Every declared out, metric and plot path appears in the stage script or the library."""
    library = "".join(p.read_text() for p in (ROOT / "src/cnn_compress").rglob("*.py"))
    for stage, spec in DVC.items():
        text = stage_script(spec["cmd"]).read_text() + library
        for kind in ("outs", "metrics", "plots"):
            for entry in spec.get(kind, []):
                path = entry if isinstance(entry, str) else next(iter(entry))
                name = path.rsplit("/", 1)[-1].replace("${key}", "")
                assert name in text or path.replace("/${key}", "") in text, (stage, path)
