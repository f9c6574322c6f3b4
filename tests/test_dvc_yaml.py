"""dvc.yaml stays honest: every stage depends on what its script imports and reads."""
from pathlib import Path

import pytest
import yaml
from deps_util import ROOT, expected_params, module_closure, stage_script

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("stage", sorted(DVC))
def test_deps_cover_script_and_library_modules(stage):
    spec = DVC[stage]
    script = stage_script(spec["cmd"])
    assert spec["cmd"].startswith("PYTHONPATH=src python stages/")
    deps = set(spec["deps"])
    assert str(script.relative_to(ROOT)) in deps
    missing = module_closure(script) - deps
    assert not missing, f"{stage}: add {sorted(missing)} to its deps"
    extra = {d for d in deps if d.startswith("src/")} - module_closure(script)
    assert not extra, f"{stage}: {sorted(extra)} are deps but not imported (needless re-runs)"


@pytest.mark.parametrize("stage", sorted(DVC))
def test_params_listed_are_exactly_thesections_read(stage):
    listed = set(DVC[stage].get("params") or [])
    assert listed == expected_params(DVC[stage]["cmd"], PARAMS)


def test_outputs_are_written_by_their_stage():
    """Every declared out, metric and plot path appears in the stage script or the library."""
    library = "".join(p.read_text() for p in (ROOT / "src/cnn_compress").glob("*.py"))
    for stage, spec in DVC.items():
        text = stage_script(spec["cmd"]).read_text() + library
        for kind in ("outs", "metrics", "plots"):
            for entry in spec.get(kind, []):
                path = entry if isinstance(entry, str) else next(iter(entry))
                path = path.replace("sweeps/${item.ratio}/", "")  # a branch writes the main chain's paths under --dir
                assert path in text or Path(path).name in text, (stage, path)
