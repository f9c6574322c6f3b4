"""Shared fixtures: tiny data, tiny trained models and throw-away DVC projects."""
from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

# Before torch loads OpenMP (and inherited by every dvc and stage process a test starts): the
# xdist workers share two cores, and OpenMP threads that spin while they wait for a descheduled
# sibling made a ResNet-8 training step 15x slower than with one thread.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# One OpenMP thread per process: two workers already keep both cores busy, and two threads each
# made a pair of study smokes 7% slower (310 s against 290 s, run side by side as in CI).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cnn_compress.data.config import DataConfig  # noqa: E402
from cnn_compress.data.dataset import prepare  # noqa: E402
from cnn_compress.train.config import TrainConfig  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first: the study smokes, then the other real-dvc tests, then the rest. xdist hands the
    tests out in this order as workers free up, so two long ones no longer meet at the end of the run
    with the other worker idle (a third worker does not help: the two cores are busy throughout)."""
    def weight(item: pytest.Item) -> int:
        slow = item.get_closest_marker("slow") is not None
        return 0 if slow and "smoke" in item.name else 1 if slow else 2

    items.sort(key=weight)
    # One test of each project built once for all workers (`build_once`) early, between the smokes, so
    # that its worker builds it while the other runs a smoke: left until later, both workers could
    # reach it together, one of them idle on the lock for the whole build (1-3 minutes of a core).
    for place, fixture in enumerate(SHARED_BUILDS, start=2):
        first = next((i for i, item in enumerate(items) if fixture in getattr(item, "fixturenames", ())), None)
        if first is not None and first > place:
            items.insert(place, items.pop(first))


# Session fixtures that `build_once` a whole reproduced project, in the order their first test runs.
SHARED_BUILDS = ("reproduced", "example")


# Tiny but real: the default pipeline's stage code on 30 digits per class and a ResNet-8.
TINY_PARAMS = {
    "data": {"max_per_class": 30},
    "model": {"arch": "resnet8", "width": 8},
    "train": {"epochs": 2},
    # the ratio-dependent table is on for every run: main (0.5) takes row 1, a 0.6 variant row 2
    "finetune": {"epochs": 1, "by_ratio": [{"upto": 0.5, "epochs": 1, "lr": 0.005},
                                           {"upto": 0.9, "epochs": 2, "lr": 0.02}]},
    "export": {"calib_per_class": 4},
    # three formats keep every real dvc run short; each format has its own tests (QAT runs
    # through dvc in test_structured_iterative_prune_runs_through_every_stage)
    "quantize": {"calib_per_class": 4, "formats": ["fp32", "int8_static", "fixed4"]},
    "benchmark": {"batch_sizes": [1, 8], "warmup": 1, "repeats": 3, "max_seconds": 0.2, "compile": []},
}


def set_variants(repo: Path, variants: dict) -> None:
    """Replace the ``variants`` section of the repo's params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["variants"] = variants
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# The longest command a test starts, a study smoke's whole `dvc repro`, takes about 3.5 minutes here.
COMMAND_TIMEOUT = float(os.environ.get("CNN_COMPRESS_TEST_COMMAND_TIMEOUT", 480))


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with this interpreter's bin first on PATH (so ``python`` in dvc.yaml is ours).

    A command still running after ``COMMAND_TIMEOUT`` fails its test with the Python stacks of its
    whole process group (dvc and the stage it runs): a hang costs minutes and says where it was,
    instead of holding CI until its own limit with no word of which test or process."""
    env = os.environ | warm_python() | {"DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "PYTHONFAULTHANDLER": "1"}
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGABRT)  # faulthandler prints each Python process's stacks, then it dies
            try:
                out, err = p.communicate(timeout=30)
            finally:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
            raise AssertionError(f"{' '.join(cmd)} still running after {COMMAND_TIMEOUT:.0f} s:\n"
                                 f"{out[-4000:]}\n{err[-12000:]}") from None
    proc = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


_WARM: dict[str, str] = {}
_COLD = [os.environ.get("CNN_COMPRESS_TEST_COLD") == "1"]  # a test marked `cold` sets it while it runs


def warm_python() -> dict[str, str]:
    """PATH and variables for commands a test runs: the venv's bin first (``python`` in dvc.yaml is
    ours) and, unless the test is marked ``cold`` (or CNN_COMPRESS_TEST_COLD=1), before it a ``python``
    that hands stage commands to a warm interpreter (tests/warm/server.py, started here on first use,
    one per xdist worker): the stages run as written, without re-importing torch in each."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    if _COLD[0]:
        return {"PATH": path}
    if not _WARM:
        folder = Path(tempfile.mkdtemp(prefix="cc-warm-"))  # short: a socket path has 108 bytes at most
        shim = folder / "bin/python"
        shim.parent.mkdir()
        shim.write_text(f"#!{sys.executable} -IS\n{(ROOT / 'tests/warm/client.py').read_text()}")
        shim.chmod(0o755)
        log = open(folder / "server.log", "w")  # noqa: SIM115  open while the server runs
        server = subprocess.Popen([sys.executable, str(ROOT / "tests/warm/server.py"), str(folder / "socket")],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        atexit.register(lambda: (server.kill(), shutil.rmtree(folder, ignore_errors=True)))
        _WARM.update({"bin": str(shim.parent), "CNN_COMPRESS_WARM_PYTHON": str(folder / "socket"),
                      "CNN_COMPRESS_REAL_PYTHON": sys.executable})
    return {"PATH": f"{_WARM['bin']}{os.pathsep}{path}", "CNN_COMPRESS_WARM_PYTHON": _WARM["CNN_COMPRESS_WARM_PYTHON"],
            "CNN_COMPRESS_REAL_PYTHON": _WARM["CNN_COMPRESS_REAL_PYTHON"]}


@pytest.fixture(scope="session", autouse=True)
def _warm_server_early() -> None:
    """Start the warm interpreter with the worker's first test: its imports take 7-8 s (measured here), and the first
    tests are pipelines whose first stages would otherwise start cold."""
    warm_python()


@pytest.fixture(autouse=True)
def _cold_processes(request: pytest.FixtureRequest):
    """``@pytest.mark.cold``: the commands this test runs start every stage as a new interpreter."""
    if request.node.get_closest_marker("cold") is None:
        yield
        return
    before, _COLD[0] = _COLD[0], True
    try:
        yield
    finally:
        _COLD[0] = before


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "dvc", *args], cwd, check)


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run(["git", *args], cwd)


def set_params(repo: Path, updates: dict) -> None:
    """Merge ``updates`` (section -> key -> value) into the repo's params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in updates.items():
        params[section] = (params.get(section) or {}) | values
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(dest: Path, params: dict | None = None) -> Path:
    """Copy the project's pipeline into ``dest``, with tiny params, as a fresh git + DVC repo."""
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("params.yaml", "dvc.yaml", "place.yaml", ".gitignore", ".dvcignore", "inputs/README.md"):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, dest / name)
    set_params(dest, TINY_PARAMS | (params or {}))
    git("init", "-q", "-b", "main", cwd=dest)
    dvc("init", "-q", cwd=dest)
    with open(dest / ".dvc/config", "a") as config:  # what `dvc config core.analytics false` writes, without
        config.write("[core]\n    analytics = false\n")  # starting dvc again (~2 s a project)
        config.write("[plots]\n    html_template = plots/offline.html\n")  # the project's offline Vega page
    shutil.copytree(ROOT / ".dvc/plots", dest / ".dvc/plots")  # and its templates (dvc.yaml names them)
    git("add", "-A", cwd=dest)
    git("commit", "-qm", "init", cwd=dest)
    return dest


def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every xdist worker of this test run sees (the workers' temp folders share a parent)."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        return tmp_path_factory.getbasetemp().parent
    path = tmp_path_factory.getbasetemp() / "shared"  # one process: its own temp folder
    path.mkdir(exist_ok=True)
    return path


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], str]) -> tuple[Path, str]:
    """``build(folder)`` run once per test run for all xdist workers, returning the folder and what
    ``build`` returned: the first worker to need it builds, the others wait on a file lock (a
    per-worker session fixture built it twice). xdist_group cannot pin the tests to one worker:
    pytest 9.2 no longer reads the node id xdist 3.8 rewrites."""
    shared = shared_dir(tmp_path_factory)
    folder, log = shared / name, shared / f"{name}.out"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not log.exists():
            building = shared / f"{name}.building"
            shutil.rmtree(building, ignore_errors=True)  # a build that failed in another worker
            building.mkdir()
            out = build(building)
            building.rename(folder)
            log.write_text(out)
    return folder, log.read_text()


def use_cache(dvc_dir: Path, cache: Path) -> None:
    """Point a DVC project (its ``.dvc`` folder) at ``cache``, as ``dvc cache dir --local`` does:
    config.local is git-ignored, so the project's commits and ``git status`` do not change."""
    with open(dvc_dir / "config.local", "a") as config:
        config.write(f"[cache]\n    dir = {cache}\n")


@pytest.fixture(scope="session")
def dvc_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DVC cache (objects and run-cache) for this whole test run, all workers. A project pointed
    at it (``use_cache``) restores a stage that another test already ran with the same command, deps
    and params instead of running it again (dvc prints "Stage '...' is cached - skipping run"), so
    only a test that needs a stage to *run* must keep its own cache. Concurrent use is safe: DVC
    writes each object and run-cache entry to a temporary file and renames it."""
    path = shared_dir(tmp_path_factory) / "dvc-cache"
    path.mkdir(exist_ok=True)
    return path


def _reproduce(repo: Path) -> str:
    make_project(repo)
    out = dvc("repro", cwd=repo).stdout
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "reproduced", cwd=repo)
    return out


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tiny project reproduced from scratch and committed, once per test run (all workers), with
    the output of that ``dvc repro``. Tests read it; a test that changes anything works on ``copy_project``."""
    return build_once(tmp_path_factory, "reproduced", _reproduce)


def copy_project(src: Path, dest: Path) -> Path:
    """A copy with its git history, DVC cache and run-cache: what a clone + ``dvc pull`` gives."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def _merge_cache(src: Path, dest: Path) -> None:
    """Add ``src``'s objects and run-cache entries missing from ``dest``, each file whole or not at all
    (written beside its place and renamed): other workers' dvc may be reading ``dest`` meanwhile."""
    for path in src.rglob("*"):
        target = dest / path.relative_to(src)
        if path.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(f".{target.name}.{os.getpid()}.part")
            shutil.copy2(path, part)
            os.replace(part, target)


@pytest.fixture()
def cached_project(tmp_path: Path, dvc_cache: Path, reproduced: tuple[Path, str]) -> Path:
    """A fresh tiny project (``make_project``: nothing reproduced yet) on the run's shared DVC cache,
    which holds ``reproduced``'s outputs and run-cache: its first ``dvc repro`` restores every stage
    ("Stage '...' is cached - skipping run") in seconds, and runs only what the test changed."""
    with open(dvc_cache.parent / f"{dvc_cache.name}.seed.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (seeded := dvc_cache.parent / f"{dvc_cache.name}.seeded").exists():
            _merge_cache(reproduced[0] / ".dvc/cache", dvc_cache)
            seeded.touch()
    repo = make_project(tmp_path / "repo")
    use_cache(repo / ".dvc", dvc_cache)
    return repo


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory):
    """Prepared digits, 30 images per class."""
    return prepare(DataConfig(max_per_class=30), tmp_path_factory.mktemp("data"))


def _resnet8(ds, epochs: int, batch_size: int):
    """A width-8 ResNet-8 trained on ``ds`` with a fixed seed, as a self-describing checkpoint."""
    from cnn_compress.models.checkpoint import Checkpoint
    from cnn_compress.models.zoo import build_model
    from cnn_compress.train.loop import setup_torch, train_model

    setup_torch(0, 2)
    args = {"num_classes": ds.num_classes, "width": 8}
    model = build_model("resnet8", **args)
    train_model(model, ds, TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.05, device="cpu"))
    return Checkpoint(model, "resnet8", args, ds.class_names, ds.mean, ds.std, tuple(ds.images.shape[1:]))


def _shared_resnet8(tmp_path_factory: pytest.TempPathFactory, name: str, ds, epochs: int, batch_size: int):
    """``_resnet8`` trained once for all xdist workers (each trained its own, the same bytes) and read
    back from its file: a fixed-seed run, so every worker gets the weights it would have trained."""
    from cnn_compress.models.checkpoint import load_checkpoint, save_checkpoint
    from cnn_compress.train.loop import setup_torch

    def build(folder: Path) -> str:
        save_checkpoint(folder / "model.pt", _resnet8(ds, epochs, batch_size))
        return ""

    folder, _ = build_once(tmp_path_factory, name, build)
    setup_torch(0, 2)  # as after training it here: two threads, and a seeded generator in every worker
    ckpt = load_checkpoint(folder / "model.pt")
    _SHARED_CHECKPOINTS[name] = (ckpt, folder / "model.pt", _state(ckpt.model))
    return ckpt


# name -> (the session's checkpoint object, its file, its state when handed out)
_SHARED_CHECKPOINTS: dict[str, tuple] = {}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(autouse=True)
def _shared_checkpoints_stay_unchanged(request: pytest.FixtureRequest):
    """A test that changes a session checkpoint in place (prunes it, trains its BatchNorm) would change
    what every later test of its worker reads: CI failed once on a sparsity of 55% where 50% was made,
    on a model an earlier test had pruned. Restore it and name the test that did it."""
    yield
    for name, (ckpt, path, state) in _SHARED_CHECKPOINTS.items():
        if name not in request.fixturenames:
            continue
        now = ckpt.model.state_dict()
        if now.keys() == state.keys() and all(torch.equal(now[k], v) for k, v in state.items()):
            continue
        from cnn_compress.models.checkpoint import load_checkpoint

        ckpt.model = load_checkpoint(path).model
        pytest.fail(f"{request.node.nodeid} changed the shared {name} in place (restored): work on a copy")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_dataset):
    """A ResNet-8 trained for 10 short epochs on the tiny digits (fast, and better than chance)."""
    return _shared_resnet8(tmp_path_factory, "tiny_checkpoint", tiny_dataset, epochs=10, batch_size=32)


@pytest.fixture(scope="session")
def digits_dataset(tmp_path_factory: pytest.TempPathFactory):
    """The default data, whole: digits with the default split (360 test images)."""
    return prepare(DataConfig(), tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory, digits_dataset):
    """A ResNet-8 (width 8) trained 8 epochs on the default data: ~90% top-1 in a few seconds,
    the reference that accuracy-tolerance tests compare quantized variants against."""
    return _shared_resnet8(tmp_path_factory, "digits_checkpoint", digits_dataset, epochs=8, batch_size=64)


@pytest.fixture()
def no_cuda_threads():
    torch.set_num_threads(2)
