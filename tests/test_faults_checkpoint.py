"""Issue 32, item 1: a checkpoint carries a sha256 digest of its own payload and every load checks it,
so a copy damaged in a cache or remote that still unpickles is refused, not used with altered weights."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from cnn_compress.core.errors import CheckpointError
from cnn_compress.models.checkpoint import load_checkpoint, payload_digest, read_state_dict, save_checkpoint


def _overwrite_middle_of_largest_tensor(path: Path, size: int = 4096) -> None:
    """4 KB of the largest tensor's bytes replaced in place: same file size, still a valid zip + pickle."""
    with zipfile.ZipFile(path) as archive:
        entry = max(archive.infolist(), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    start = entry.header_offset + 30 + int.from_bytes(raw[entry.header_offset + 26:entry.header_offset + 28], "little") \
        + int.from_bytes(raw[entry.header_offset + 28:entry.header_offset + 30], "little")  # after the local header
    assert entry.file_size > size and entry.compress_type == zipfile.ZIP_STORED
    at = start + entry.file_size // 2 - size // 2
    raw[at:at + size] = bytes(range(256)) * (size // 256)
    path.write_bytes(bytes(raw))


def test_altered_tensor_bytes_are_corrupt_and_named(tiny_checkpoint, tmp_path):
    path = tmp_path / "baseline.pt"
    save_checkpoint(path, tiny_checkpoint)
    before = path.stat().st_size
    _overwrite_middle_of_largest_tensor(path)
    assert path.stat().st_size == before
    torch.load(path, weights_only=True)  # the damage is invisible to torch: it still unpickles
    with pytest.raises(CheckpointError, match=rf"{path}: corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="corrupt"):  # model.pretrained / distillation teachers too
        read_state_dict(path)


def test_a_corrupt_checkpoint_is_one_line_and_exit_2(tiny_checkpoint, tmp_path):
    path = tmp_path / "baseline.pt"
    save_checkpoint(path, tiny_checkpoint)
    _overwrite_middle_of_largest_tensor(path)
    code = ("from cnn_compress.core.errors import cli\nfrom cnn_compress.models.checkpoint import load_checkpoint\n"
            f"cli(lambda: load_checkpoint({str(path)!r}))()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line, no traceback
    assert proc.stderr.startswith(f"error: {path}: corrupt")


def test_digest_is_deterministic_and_older_files_still_load(tiny_checkpoint, tmp_path):
    save_checkpoint(tmp_path / "a.pt", tiny_checkpoint)
    save_checkpoint(tmp_path / "b.pt", tiny_checkpoint)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()  # same weights, same bytes
    payload = torch.load(tmp_path / "a.pt", weights_only=True)
    assert payload["digest"] == payload_digest(payload) and len(payload["digest"]) == 64
    payload["state_dict"]["linear.bias"][0] += 1.0  # any tensor change moves the digest
    assert payload_digest(payload) != payload["digest"]
    payload["state_dict"]["linear.bias"][0] -= 1.0
    payload["class_names"] = list(reversed(payload["class_names"]))  # metadata counts too
    assert payload_digest(payload) != payload["digest"]
    old = torch.load(tmp_path / "a.pt", weights_only=True)
    del old["digest"]  # written before digests existed
    torch.save(old, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    torch.testing.assert_close(loaded.model.state_dict(), tiny_checkpoint.model.state_dict())
