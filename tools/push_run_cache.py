"""Push the run-cache so a teammate's ``dvc repro --pull`` restores every stage, not just some.

``dvc push --run-cache`` uploads the run records and the stages' cached outputs, but not the
contents of ``cache: false`` outputs (the git-tracked metrics and plots this project keeps),
which DVC stores in the local cache for the run-cache only. Restoring a stage needs all of its
outputs, so those stages would run again on the other machine (treeverse/dvc#5749). This pushes
the run records with DVC, then every object any run record refers to.

    python tools/push_run_cache.py [-r REMOTE]      # run from the project root
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from dvc.exceptions import DvcException
from dvc.repo import Repo
from dvc_data.hashfile.hash_info import HashInfo


def run_record_objects(cache_dir: Path) -> set[HashInfo]:
    """Every output hash named by a run record under ``<cache>/runs``."""
    objs = set()
    for record in (cache_dir / "runs").rglob("*"):
        if record.is_file():
            for out in (yaml.safe_load(record.read_text()) or {}).get("outs", []):
                if out.get("md5"):
                    objs.add(HashInfo("md5", out["md5"]))
    return objs


def dir_entries(local: object, oid: str) -> set[HashInfo]:
    """The files of a directory output (a ``.dir`` manifest lists them): a ``cache: false``
    metrics folder such as ``metrics/<variant>/`` needs its files on the remote, not only its list."""
    entries = json.loads(Path(local.oid_to_path(oid)).read_text())  # type: ignore[attr-defined]
    return {HashInfo("md5", e["md5"]) for e in entries if local.exists(e["md5"])}  # type: ignore[attr-defined]


def push(remote: str | None) -> tuple[int, int]:
    """Push the run records, then every object they name; returns (objects named, uploaded)."""
    repo = Repo(".")
    repo.push(remote=remote, run_cache=True)
    local = repo.cache.local
    objs = {h for h in run_record_objects(Path(local.path).parent.parent) if local.exists(h.value)}
    objs |= {f for h in objs if h.value.endswith(".dir") for f in dir_entries(local, h.value)}
    result = repo.cloud.push(objs, remote=remote, odb=None)
    return len(objs), len(result.transferred)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", "--remote", default=None, help="remote name (default: the default remote)")
    args = parser.parse_args()
    try:
        named, uploaded = push(args.remote)
    except DvcException as exc:  # no remote, unreachable remote, missing credentials: one line
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a read-only, full or forbidden remote folder: DVC lets these through
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: cannot write to the remote ({exc.strerror or exc}{where})", file=sys.stderr)
        sys.exit(2)
    print(f"run-cache pushed: {named} objects referenced by run records, {uploaded} uploaded")


if __name__ == "__main__":
    main()
