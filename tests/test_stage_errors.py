"""Bad input to a stage script: exit code 2, one line naming the problem, outputs untouched.

The parameter cases run each script in this process (``runpy``, as ``__main__``): the same code
path as a real run without paying a torch import per case. The checkpoint cases, and
test_failed_stage_exits_2_and_keeps_outputs through ``dvc repro``, run real processes.
"""
import os
import runpy
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, set_params, set_variants

from cnn_compress.models.checkpoint import save_checkpoint


@pytest.fixture()
def project(tmp_path, tiny_checkpoint):
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    save_checkpoint(tmp_path / "models/baseline.pt", tiny_checkpoint)
    (tmp_path / "variants/main").mkdir(parents=True)
    (tmp_path / "variants/main/pruned.pt").write_bytes(b"earlier output")
    return tmp_path


def stage(project, name):
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    name, *options = name.split()
    return subprocess.run([sys.executable, f"stages/{name}.py", *options], cwd=project, env=env,
                          capture_output=True, text=True)


def stage_in_process(project, name, monkeypatch, capsys) -> tuple[object, str]:
    """(exit code, stderr) of ``python stages/<name>.py [args]`` run here; any other exception
    fails the test. ``name`` may carry arguments: ``"quantize main"``."""
    monkeypatch.chdir(project)
    name, *options = name.split()
    monkeypatch.setattr(sys, "argv", [f"stages/{name}.py", *options])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(f"stages/{name}.py", run_name="__main__")
    return exc.value.code, capsys.readouterr().err


def resolve(project, monkeypatch, capsys) -> None:
    """Run the variants stage (configs/<variant>/*.json), as dvc would before a variant stage."""
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", ["stages/variants.py"])
    runpy.run_path("stages/variants.py", run_name="__main__")


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("variants", {"prune": {"ratio": 1.5}}, "error: prune.ratio: must be in [0, 1), got 1.5"),
        ("variants", {"prune": {"ratoi": 0.5}}, "error: prune.ratoi: unknown key (did you mean 'ratio'?)"),
        ("variants", {"variants": {"main": {"prune": {"ratio": 1.5}}}},
         "error: variants.main.prune.ratio: must be in [0, 1), got 1.5"),
        ("variants", {"variants": {"main": {"data": {"max_per_class": 3}}}},
         "error: variants.main.data: a variant overrides only prune, finetune, quantize, export, benchmark"),
        ("variants", {"variants": {}}, "error: variants: must map at least one variant name"),
        ("variants", {"variants": {"a b": {}}}, "error: variants.a b: a variant name holds letters"),
        ("variants", {"quantize": {"formats": ["int3"]}}, "error: quantize.formats.int3: cannot tell the format"),
        ("variants", {"quantize": {"formats": ["fixed9"]}}, "error: quantize.formats.fixed9.bits: must be in [2, 8]"),
        ("variants", {"quantize": {"formats": {"fixed4": {"scheme": "signed"}}}},
         "error: quantize.formats.fixed4.scheme: must be one of symmetric, asymmetric, got 'signed'"),
        ("variants", {"quantize": {"formats": {"int8_qat": {"epochs": 0}}}},
         "error: quantize.formats.int8_qat.epochs: must be >= 1, got 0"),
        ("variants", {"prune": {"order": "after_quantize", "method": "structured"}},
         "error: prune.order: after_quantize prunes quantized weights one-shot"),
        ("variants", {"prune": {"order": "after_quantize"}, "quantize": {"formats": ["fp32", "int8_dynamic"]}},
         "error: variants.main: prune.order: after_quantize cannot prune the weights of int8_dynamic"),
        ("prune main", {"prune": {"method": "magic"}}, "error: prune.method: unknown method 'magic'"),
        ("variants", {"export": {"formats": ["tflite"]}}, "error: export.formats: unknown format 'tflite'"),
        ("prune other", {}, "error: configs/other/prune.json: cannot read the resolved variant config"),
        ("train", {"train": {"epochs": "ten"}}, "error: train.epochs: must be an integer, got 'ten'"),
        ("prepare", {"data": {"name": "imagenet"}}, "error: data.name: unknown data set 'imagenet'"),
        ("train", {}, "error: data/prepared: prepared data set not found"),
        ("prepare", {"data": {"name": "imagefolder"}}, "error: data.source: imagefolder needs a directory"),
        ("prepare", {"data": {"name": "imagefolder", "source": "no.tar.gz"}}, "error: no.tar.gz: data.source not found"),
        ("prepare", {"data": {"mean": [0.5]}}, "error: data.mean: must list 3 channel values or none"),
        ("train", {"model": {"reset_head": True}}, "error: model.reset_head: needs model.pretrained"),
    ],
)
def test_bad_params_and_missing_inputs(project, name, params, message, monkeypatch, capsys):
    variants = params.pop("variants", None)
    set_params(project, params)
    if variants is not None:
        set_variants(project, variants)
    if name.split()[0] in ("prune", "export"):
        resolve(project, monkeypatch, capsys)
    code, err = stage_in_process(project, name, monkeypatch, capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in err
    assert (project / "variants/main/pruned.pt").read_bytes() == b"earlier output"


@pytest.mark.parametrize(("content", "message"), [(None, "checkpoint not found"), (b"PK\x03\x04junk", "corrupt")])
def test_missing_or_corrupt_checkpoint(project, content, message):
    path = project / "models/baseline.pt"
    path.unlink()
    if content is not None:
        path.write_bytes(content)
    assert stage(project, "variants").returncode == 0
    proc = stage(project, "prune main")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert (project / "variants/main/pruned.pt").read_bytes() == b"earlier output"


@pytest.mark.parametrize("name", ["prepare", "train", "sensitivity", "baseline", "variants", "prune", "finetune", "quantize",
                                  "export", "benchmark", "report", "study"])
def test_every_stage_answers_help_with_what_it_reads_and_writes(project, name, monkeypatch, capsys):
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", [f"stages/{name}.py", "--help"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(f"stages/{name}.py", run_name="__main__")
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "Reads:" in out and "Writes:" in out


EXIT_PROBE = """
import atexit, concurrent.futures, sys
from pathlib import Path
from cnn_compress.core.errors import cli

out = Path(sys.argv[1])
pool = concurrent.futures.ThreadPoolExecutor(2)  # an idle worker left behind (ONNX export leaves one)
pool.submit(lambda: None).result()
atexit.register(lambda: out.with_suffix(".atexit").write_text("ran"))

@cli
def main():
    sys.stdout.write("buffered, no newline")  # flushed before the process ends
    open(out, "w").write("written")  # closed by reference counting, as usual
    return 0

main()
out.with_suffix(".after").write_text("returned")  # only without DVC_STAGE: dvc's stage ends in main()
"""


@pytest.mark.parametrize("under_dvc", [True, False])
def test_a_stage_under_dvc_ends_at_once_yet_runs_its_exit_handlers(tmp_path, under_dvc):
    """A stage dvc started skips Python's teardown (0.7 s of torch cleanup) but not what an exit must
    do: thread pools stop (joining their workers alone hung the export stage), handlers run, output
    is flushed. A script run by anything else returns from main() as before."""
    env = {k: v for k, v in os.environ.items() if k != "DVC_STAGE"} | {"PYTHONPATH": str(ROOT / "src")}
    if under_dvc:
        env["DVC_STAGE"] = "probe"
    out = tmp_path / "out.txt"
    proc = subprocess.run([sys.executable, "-c", EXIT_PROBE, str(out)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "buffered, no newline"
    assert out.read_text() == "written" and out.with_suffix(".atexit").read_text() == "ran"
    assert out.with_suffix(".after").exists() is not under_dvc


DYNAMO_PROBE = """
import atexit, logging, sys
from pathlib import Path
out = Path(sys.argv[1])
atexit.register(lambda: out.write_text(str("tabulate" in sys.modules)))  # runs last: after dynamo's handler
import torch._dynamo  # noqa: F401  registers its compile-time report for the exit
from cnn_compress.core.errors import cli

@cli
def main():
    if sys.argv[2] == "logged":
        logging.getLogger("torch._dynamo.utils").setLevel(logging.INFO)

main()
"""


@pytest.mark.parametrize("logged", [False, True])
def test_a_stage_skips_dynamos_exit_report_unless_its_logger_is_on(tmp_path, logged):
    """torch._dynamo builds its compile-time table at exit (0.3 s importing tabulate) only to log it at
    INFO: a stage under dvc skips it unless that logger is on."""
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "DVC_STAGE": "probe"}
    out = tmp_path / "tabulate.txt"
    proc = subprocess.run([sys.executable, "-c", DYNAMO_PROBE, str(out), "logged" if logged else "quiet"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == str(logged)
