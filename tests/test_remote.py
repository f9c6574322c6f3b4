"""Sharing through DVC remotes with the real CLI: local folder and S3 (moto on 127.0.0.1)."""
import hashlib
import json
import os
import re
import socket
import sys
from pathlib import Path

import pytest
from conftest import ROOT, copy_project, dvc, git, run, set_params

UP_TO_DATE = "Data and pipelines are up to date."
OUTPUTS = ("data/prepared", "models", "configs", "variants", "reports", "metrics", "timings", "plots")


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@.-]+)'", output)


def digests(repo: Path) -> dict[str, str]:
    """md5 of every file under the pipeline's outputs, keyed by repo-relative path."""
    files = [f for d in OUTPUTS for f in (repo / d).rglob("*") if f.is_file()]
    return {str(f.relative_to(repo)): hashlib.md5(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def pipeline(reproduced, tmp_path_factory):
    """The session's reproduced tiny project, copied as this module's origin; each test clones it."""
    return copy_project(reproduced[0], tmp_path_factory.mktemp("origin") / "repo")


def share(origin: Path, url: str, *config: tuple[str, str]) -> None:
    dvc("remote", "add", "-f", "-d", "store", url, cwd=origin)
    for key, value in config:
        dvc("remote", "modify", "store", key, value, cwd=origin)
    git("add", ".dvc/config", cwd=origin)
    git("commit", "-qm", f"remote {url}", cwd=origin)


def clone(origin: Path, dest: Path) -> Path:
    git("clone", "-q", str(origin), str(dest), cwd=origin.parent)
    return dest


@pytest.mark.slow
def test_local_remote_round_trip_and_run_cache(pipeline, tmp_path):
    share(pipeline, str(tmp_path / "store"))
    assert "pushed" in dvc("push", cwd=pipeline).stdout
    expected = digests(pipeline)

    # a fresh clone pulls every output byte-identical; nothing is stale and repro runs nothing
    fresh = clone(pipeline, tmp_path / "fresh")
    dvc("pull", cwd=fresh)
    assert digests(fresh) == expected
    assert UP_TO_DATE in dvc("status", cwd=fresh).stdout
    out = dvc("repro", cwd=fresh).stdout
    assert ran(out) == [] and UP_TO_DATE in out

    # a teammate's uncommitted experiment travels through the run-cache: restored, not re-run.
    # `dvc push --run-cache` alone leaves out the contents of git-tracked (cache: false) metrics,
    # so stages writing them would run again (dvc#5749); tools/push_run_cache.py pushes those too.
    set_params(pipeline, {"prune": {"ratio": 0.7}})
    dvc("repro", cwd=pipeline)
    run([sys.executable, str(ROOT / "tools/push_run_cache.py")], cwd=pipeline)
    assert any((tmp_path / "store/runs").rglob("*"))
    git("checkout", "--", ".", cwd=pipeline)
    dvc("checkout", cwd=pipeline)  # back to the committed outputs for the other tests
    mate = clone(pipeline, tmp_path / "mate")
    set_params(mate, {"prune": {"ratio": 0.7}})
    dvc("pull", "--run-cache", cwd=mate)
    out = dvc("repro", "--pull", cwd=mate).stdout
    for stage in ("variants", "prune@main", "finetune@main", "quantize@main", "export@main", "benchmark@main"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in out, out
    assert "Stage 'report' is cached - skipping run, checking out outputs" in out
    assert ran(out) == [], out
    assert json.loads((mate / "variants/main/prune.json").read_text())["sparsity"] == pytest.approx(70, abs=0.5)


@pytest.mark.slow
def test_unreachable_remote_fails_clearly_and_loses_nothing(pipeline, tmp_path):
    repo = clone(pipeline, tmp_path / "work")
    share(pipeline, str(tmp_path / "good"))
    dvc("push", cwd=pipeline)
    cache_before = sorted(p.name for p in (pipeline / ".dvc/cache").rglob("*") if p.is_file())
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the remote folder should be")
    share(pipeline, str(blocker / "store"))
    proc = dvc("push", cwd=pipeline, check=False)
    assert proc.returncode != 0 and "ERROR" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in (pipeline / ".dvc/cache").rglob("*") if p.is_file()) == cache_before
    share(pipeline, str(tmp_path / "good"))  # back to a reachable remote: the push completes
    assert dvc("push", cwd=pipeline).returncode == 0
    git("pull", "-q", cwd=repo)
    dvc("pull", cwd=repo)
    assert digests(repo) == digests(pipeline)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def s3_server(monkeypatch):
    """moto's S3 server on loopback, with dummy credentials; stopped at the end."""
    pytest.importorskip("dvc_s3", reason="dvc-s3 not installed (pip install -e '.[test]')")
    moto_server = pytest.importorskip("moto.server", reason="moto[server] not installed")
    boto3 = pytest.importorskip("boto3")
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
             "AWS_EC2_METADATA_DISABLED": "true"}  # never ask a cloud metadata endpoint: loopback only
    for key, value in creds.items():
        monkeypatch.setenv(key, value)
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="cnn-compress")
    try:
        yield server, endpoint
    finally:
        server.stop()


@pytest.mark.slow
def test_s3_remote_round_trip_and_interrupted_push(pipeline, tmp_path, s3_server):
    server, endpoint = s3_server
    share(pipeline, "s3://cnn-compress/store", ("endpointurl", endpoint))
    env_ok = os.environ.copy()

    # missing credentials: a clear error, not a hang or a traceback
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.pop(key)
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    os.environ["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    try:
        proc = dvc("push", cwd=pipeline, check=False)
    finally:
        os.environ.clear()
        os.environ.update(env_ok)
    assert proc.returncode != 0 and "ERROR" in proc.stderr and "Traceback" not in proc.stderr

    # the server goes away mid-session: push fails, the local cache is intact, a re-run completes
    server.stop()
    proc = dvc("push", cwd=pipeline, check=False)
    assert proc.returncode != 0 and "ERROR" in proc.stderr
    server.start()
    dvc("push", cwd=pipeline)

    fresh = clone(pipeline, tmp_path / "fresh")
    dvc("pull", cwd=fresh)
    assert digests(fresh) == digests(pipeline)
    assert ran(dvc("repro", cwd=fresh).stdout) == []


def test_tools_fail_with_one_line_without_a_remote_or_repo(tmp_path):
    git("init", "-q", cwd=tmp_path)
    dvc("init", "-q", cwd=tmp_path)
    for tool, message in (("push_run_cache.py", "error: config file error: no remote specified"),
                          ("pareto.py", "error: dvc exp show --json:")):
        cwd = tmp_path if tool == "push_run_cache.py" else tmp_path.parent
        proc = run([sys.executable, str(ROOT / "tools" / tool)], cwd=cwd, check=False)
        assert proc.returncode == 2 and proc.stderr.strip().startswith(message), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
