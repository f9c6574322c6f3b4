"""Faults around the artifacts themselves: byte-reproducible INT8 programs, damaged `.pt2` files,
a full disk, written files' modes, a corrupted DVC remote and a read-only one."""
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, copy_project, dvc, git, run

from cnn_compress.core import atomic
from cnn_compress.core.errors import CheckpointError
from cnn_compress.runtimes.runners import load_runner

# A fresh process builds the PT2E formats of a saved checkpoint (argv: src folder, checkpoint,
# calibration batch, output folder), as the quantize stage would.
BUILD_PT2 = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import torch
from cnn_compress.models.checkpoint import load_checkpoint
from cnn_compress.quantize.config import Int8DynamicConfig, Int8StaticConfig
from cnn_compress.quantize.formats import HANDLERS, QuantContext

ckpt, calib, out = load_checkpoint(sys.argv[2]), torch.load(sys.argv[3]), Path(sys.argv[4])
for fmt in (Int8StaticConfig(), Int8DynamicConfig()):
    HANDLERS[type(fmt)].build(ckpt, fmt, QuantContext(calib), out / f"{fmt.TYPE}.pt2")
"""


@pytest.fixture(scope="module")
def int8_program(tiny_checkpoint, tiny_dataset, tmp_path_factory):
    """A real static-INT8 ``.pt2`` of the tiny model, a batch and its logits, the calibration images."""
    from cnn_compress.data.dataset import calibration_batch
    from cnn_compress.quantize.config import Int8StaticConfig
    from cnn_compress.quantize.formats import HANDLERS, QuantContext

    path = tmp_path_factory.mktemp("pt2") / "int8_static.pt2"
    calib = calibration_batch(tiny_dataset, 2)
    HANDLERS[Int8StaticConfig].build(tiny_checkpoint, Int8StaticConfig(), QuantContext(calib), path)
    return path, calib[:4], load_runner(path).predict(calib[:4]), calib


def test_pt2e_archives_are_byte_identical_across_processes_and_checkouts(tiny_checkpoint, int8_program, tmp_path):
    """torch.export records each node's pass history with Python ids (new in every process) and
    stack traces with this checkout's absolute paths; both are dropped before saving. Built here
    and again in a fresh process from a copy of the code in another folder: the same bytes."""
    from cnn_compress.models.checkpoint import save_checkpoint
    from cnn_compress.quantize.config import Int8DynamicConfig
    from cnn_compress.quantize.formats import HANDLERS, QuantContext

    path, calib = int8_program[0], int8_program[3]
    here = {"int8_static.pt2": path.read_bytes()}
    HANDLERS[Int8DynamicConfig].build(tiny_checkpoint, Int8DynamicConfig(), QuantContext(calib), tmp_path / "dyn.pt2")
    here["int8_dynamic.pt2"] = (tmp_path / "dyn.pt2").read_bytes()
    save_checkpoint(tmp_path / "model.pt", tiny_checkpoint)
    torch.save(calib, tmp_path / "calib.pt")
    other_src = shutil.copytree(ROOT / "src", tmp_path / "elsewhere/src",
                                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run([sys.executable, "-c", BUILD_PT2, str(other_src), str(tmp_path / "model.pt"), str(tmp_path / "calib.pt"),
         str(tmp_path / "again")], cwd=tmp_path)
    for name, data in here.items():
        assert (tmp_path / "again" / name).read_bytes() == data, name
        assert b"graph_id" not in data and str(ROOT).encode() not in data, name


def _weights_offset(path: Path) -> int:
    """Where the largest weight tensor's bytes start inside the archive (stored uncompressed)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/weights/weight_" in i.filename), key=lambda i: i.file_size)
        data = archive.read(info)
    return path.read_bytes().index(data, info.header_offset) + len(data) // 2  # past its local header


DAMAGE = {
    "cut_in_half": lambda raw, path: raw[: len(raw) // 2],
    "cut_end": lambda raw, path: raw[:-64],
    "middle_overwritten": lambda raw, path: raw[: len(raw) // 2] + b"\xff" * 4096 + raw[len(raw) // 2 + 4096 :],
    # the case torch itself lets through: a weight's bytes changed, the program loads and runs
    "weights_overwritten": lambda raw, path: (lambda at: raw[:at] + bytes(64) + raw[at + 64 :])(_weights_offset(path)),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_pt2_is_one_line_naming_the_file(int8_program, damage, tmp_path, capfd):
    path, batch, logits, _ = int8_program
    raw = path.read_bytes()
    bad = tmp_path / "int8_static.pt2"
    bad.write_bytes(DAMAGE[damage](raw, path))
    assert bad.read_bytes() != raw
    with pytest.raises(CheckpointError) as info:
        load_runner(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: corrupt torch.export program") and "\n" not in message, message
    assert "Traceback" not in capfd.readouterr().err  # torch logs a failed load's traceback as a warning
    assert torch.equal(load_runner(path).predict(batch), logits)  # the intact file still loads


def test_damaged_pt2_through_a_stage_entry_point_exits_2(int8_program, tmp_path):
    path = tmp_path / "int8_static.pt2"
    path.write_bytes(int8_program[0].read_bytes()[:-1000])
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from cnn_compress.core.errors import cli\n"
            "from cnn_compress.runtimes.runners import load_runner\n"
            "cli(load_runner)(sys.argv[2])")
    proc = run([sys.executable, "-c", code, str(ROOT / "src"), str(path)], cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {path}: corrupt torch.export program "
                                                "(cut short: it does not end with the zip end-of-archive record)"]


def _private_mounts() -> list[str] | None:
    """``unshare`` into a private mount namespace (a user namespace unless root), where a test may
    mount a tiny tmpfs or a read-only bind without touching the machine; None where not allowed."""
    if shutil.which("unshare") is None:
        return None
    prefix = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--mount"]
    probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=4k none /tmp"], capture_output=True)
    return prefix if probe.returncode == 0 else None


# The prepare stage (a real stage: 300 digits, a ~1 MB dataset.pt) in a folder with no room for it.
PREPARE = ("import resource, runpy, sys\n"
           "if sys.argv[2] == 'fsize':\n"
           "    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))  # Python ignores SIGXFSZ: EFBIG\n"
           "sys.path.insert(0, sys.argv[1] + '/src')\n"
           "sys.argv = [sys.argv[1] + '/stages/prepare.py']\n"
           "runpy.run_path(sys.argv[0], run_name='__main__')")
LIST_AND_EXIT = "import os, sys; print(sorted(os.path.join(d, f) for d, _, fs in os.walk('.') for f in fs))"


@pytest.mark.parametrize("limit", ["tmpfs_full", "fsize"])
def test_disk_full_while_writing_is_one_line_and_leaves_nothing(limit, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    if limit == "fsize":  # RLIMIT_FSIZE: any machine, the kernel refuses the write (EFBIG)
        (work / "params.yaml").write_text("data:\n  max_per_class: 30\n")
        proc = run([sys.executable, "-c", PREPARE, str(ROOT), "fsize"], cwd=work, check=False)
        listing = str(sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()))
        reason = "File too large"
    else:  # a real full disk: a 64 KiB tmpfs in a private mount namespace
        if (prefix := _private_mounts()) is None:
            pytest.skip("no private mount namespace here (unshare)")
        script = ('mount -t tmpfs -o size=64k none "$1" && cd "$1" && printf "data:\\n  max_per_class: 30\\n" > params.yaml'
                  ' && { "$2" -c "$3" "$4" full; rc=$?; "$2" -c "$5"; exit $rc; }')
        proc = run([*prefix, "sh", "-c", script, "sh", str(work), sys.executable, PREPARE, str(ROOT), LIST_AND_EXIT],
                   cwd=tmp_path, check=False)
        listing, reason = proc.stdout.strip().splitlines()[-1], "No space left on device"
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: data/prepared/dataset.pt: cannot write it ({reason}); nothing was written"], proc.stderr
    assert "Traceback" not in proc.stderr
    assert "dataset.pt" not in listing and ".tmp" not in listing, listing  # no partial file, no temp file


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o027, 0o077])
def test_written_files_follow_the_umask(umask, tmp_path):
    old = os.umask(umask)
    try:
        assert atomic.current_umask() == umask
        assert atomic.current_umask() == umask  # reading it left it as it was
        atomic.write_json(tmp_path / "a.json", {"x": 1})
        with atomic.atomic_path(tmp_path / "sub/b.bin") as tmp:
            tmp.write_bytes(b"1")
    finally:
        os.umask(old)
    for name in ("a.json", "sub/b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "b.bin", "sub"]  # no temp file left


def test_read_only_output_folder_is_one_line(tmp_path):
    """EROFS / EACCES from the temp file itself, not only from a full disk."""
    if (prefix := _private_mounts()) is None:
        pytest.skip("no private mount namespace here (unshare)")
    out = tmp_path / "out"
    out.mkdir()
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from cnn_compress.core import atomic\n"
            "from cnn_compress.core.errors import cli\n"
            "cli(atomic.write_text)(sys.argv[2], 'x')")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$2" -c "$3" "$4" "$1/m.json"'
    proc = run([*prefix, "sh", "-c", script, "sh", str(out), sys.executable, code, str(ROOT / "src")],
               cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {out}/m.json: cannot write it (Read-only file system); "
                                                "nothing was written"]
    assert list(out.iterdir()) == []


def test_push_run_cache_to_a_read_only_remote_is_one_line(tmp_path):
    repo, store = tmp_path / "repo", tmp_path / "store"
    repo.mkdir()
    store.mkdir()
    git("init", "-q", cwd=repo)
    dvc("init", "-q", cwd=repo)
    dvc("stage", "add", "-q", "-n", "hello", "-o", "out.txt", "echo hello > out.txt", cwd=repo)
    dvc("repro", "-q", cwd=repo)
    dvc("remote", "add", "-d", "store", str(store), cwd=repo)
    tool = [sys.executable, str(ROOT / "tools/push_run_cache.py")]
    if (prefix := _private_mounts()) is not None:  # root ignores modes: a read-only bind mount
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        proc = run([*prefix, "sh", "-c", script, "sh", str(store), *tool], cwd=repo, check=False)
        reason = "Read-only file system"
    elif os.geteuid() != 0:
        store.chmod(0o555)
        proc = run(tool, cwd=repo, check=False)
        store.chmod(0o755)
        reason = "Permission denied"
    else:
        pytest.skip("root without a private mount namespace: nothing is read-only to it")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write to the remote ({reason}: {store}"), lines
    assert not any(store.rglob("*"))


def _lock_md5(repo: Path, out: str) -> str:
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", []) if o["path"] == out)


@pytest.mark.slow
def test_corrupted_remote_object_is_caught_at_pull(reproduced, tmp_path):
    """The README's remote recipe turns on `verify`: `dvc pull` re-hashes what it downloads. A
    remote copy of models/baseline.pt damaged in place (4 KiB overwritten, same size) then stops
    the pull instead of landing in the workspace; DVC's default (no verify) takes it silently."""
    origin, store = copy_project(reproduced[0], tmp_path / "origin"), tmp_path / "store"
    dvc("remote", "add", "-d", "store", str(store), cwd=origin)
    dvc("remote", "modify", "store", "verify", "true", cwd=origin)
    git("add", ".dvc/config", cwd=origin)
    git("commit", "-qm", "remote", cwd=origin)
    dvc("push", cwd=origin)
    md5 = _lock_md5(origin, "models/baseline.pt")
    obj = store / "files/md5" / md5[:2] / md5[2:]
    size = obj.stat().st_size
    obj.chmod(0o644)  # DVC leaves remote objects read-only (0o444)...
    with open(obj, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" * 4096)
    obj.chmod(0o444)  # ...and trusts one in that mode: a writable one it re-hashes (and deletes) even unasked
    assert obj.stat().st_size == size and hashlib.md5(obj.read_bytes()).hexdigest() != md5

    fresh = tmp_path / "fresh"
    git("clone", "-q", str(origin), str(fresh), cwd=tmp_path)
    proc = dvc("pull", cwd=fresh, check=False)
    assert proc.returncode != 0, proc.stdout
    assert "Checkout failed for following targets" in proc.stderr and "models/baseline.pt" in proc.stderr, proc.stderr
    assert not (fresh / "models/baseline.pt").exists() and "Traceback" not in proc.stderr
    verbose = dvc("pull", "-v", cwd=fresh, check=False)  # names the damaged object (the README's hint)
    assert verbose.returncode != 0 and f"corrupted cache file '{fresh}/.dvc/cache/files/md5/{md5[:2]}/{md5[2:]}'" \
        in verbose.stdout + verbose.stderr

    # why the recipe sets it: without verify the damaged copy is pulled and `dvc status` is clean
    lax = tmp_path / "lax"
    git("clone", "-q", str(origin), str(lax), cwd=tmp_path)
    dvc("remote", "modify", "--local", "store", "verify", "false", cwd=lax)
    dvc("pull", cwd=lax)
    assert hashlib.md5((lax / "models/baseline.pt").read_bytes()).hexdigest() != md5
    assert "Data and pipelines are up to date." in dvc("status", cwd=lax).stdout


def test_a_program_loads_once_per_file_version_and_damage_is_never_served_from_memory(int8_program, tmp_path):
    """The benchmark reads each .pt2 three times and loads it once; a file damaged in place after
    that load still fails, and a new version of the file is loaded afresh."""
    from cnn_compress.runtimes.runners import load_program

    path = tmp_path / "int8_static.pt2"
    shutil.copy(int8_program[0], path)
    first = load_program(path)
    assert load_program(path) is first  # the same object: not loaded again
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # same size, in place
    with open(path, "r+b") as f:
        f.write(data)
    with pytest.raises(CheckpointError, match="corrupt torch.export program"):
        load_program(path)
    atomic.write_bytes(path, Path(int8_program[0]).read_bytes())  # a new version (a new file in its place)
    again = load_program(path)
    assert again is not first
    torch.testing.assert_close(again.module()(int8_program[1]), int8_program[2])
