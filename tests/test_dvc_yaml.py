"""dvc.yaml stays honest: every stage depends on what its script imports and reads."""
from pathlib import Path

import pytest
import yaml
from deps_util import ROOT, module_closure, sections_read

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("stage", sorted(DVC))
def test_deps_cover_script_and_library_modules(stage):
    spec = DVC[stage]
    script = ROOT / "stages" / f"{stage}.py"
    assert spec["cmd"].endswith(f"python stages/{stage}.py")
    deps = set(spec["deps"])
    assert f"stages/{stage}.py" in deps
    missing = module_closure(script) - deps
    assert not missing, f"{stage}: add {sorted(missing)} to its deps"
    extra = {d for d in deps if d.startswith("src/")} - module_closure(script)
    assert not extra, f"{stage}: {sorted(extra)} are deps but not imported (needless re-runs)"


@pytest.mark.parametrize("stage", sorted(DVC))
def test_params_listed_are_exactly_thesections_read(stage):
    listed = set(DVC[stage].get("params", []))
    expected = {f"{sec}.{key}" for sec in sections_read(ROOT / "stages" / f"{stage}.py") for key in PARAMS[sec]}
    assert listed == expected


def test_outputs_are_written_by_their_stage():
    """Every declared out, metric and plot path appears in the stage script or the library."""
    library = "".join(p.read_text() for p in (ROOT / "src/cnn_compress").glob("*.py"))
    for stage, spec in DVC.items():
        text = (ROOT / "stages" / f"{stage}.py").read_text() + library
        for kind in ("outs", "metrics", "plots"):
            for entry in spec.get(kind, []):
                path = entry if isinstance(entry, str) else next(iter(entry))
                assert path in text or Path(path).name in text, (stage, path)
