"""True compressed size: the container round-trips bit-exactly and models give identical outputs."""
import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from cnn_compress.core.errors import CheckpointError
from cnn_compress.data.dataset import calibration_batch
from cnn_compress.export.config import ExportConfig
from cnn_compress.export.exporters import export_all
from cnn_compress.measure.compression import (
    artifact_tensors,
    compress_artifact,
    compress_tensors,
    decode_tensor,
    decompress_tensors,
    encode_tensor,
)
from cnn_compress.models.checkpoint import load_checkpoint, save_checkpoint
from cnn_compress.prune.config import PruneConfig
from cnn_compress.prune.pruning import prune_model


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


PER_CHANNEL_4BIT = (np.random.default_rng(6).integers(-7, 8, (64, 32, 3, 3))
                    * np.random.default_rng(7).random((64, 1, 1, 1))).astype(np.float32)


@pytest.mark.parametrize(
    "array",
    [
        np.where(np.random.default_rng(0).random((64, 32, 3, 3)) < 0.8, 0, 1).astype(np.float32)
        * np.random.default_rng(1).standard_normal((64, 32, 3, 3)).astype(np.float32),  # 80% sparse fp32
        np.random.default_rng(2).integers(-128, 128, (16, 8, 3, 3), dtype=np.int8),  # int8 codes
        np.random.default_rng(3).choice(np.float32([-0.5, -0.0, 0.25, 1.5]), (40, 7)),  # 4 shared values, -0.0
        np.random.default_rng(4).standard_normal((10, 10)).astype(np.float16),
        np.zeros((5, 5), dtype=np.float32), np.zeros((0,), dtype=np.float32), np.array(3.5, dtype=np.float32),
        np.arange(100000, dtype=np.int64) * 1000,  # wide gaps: multi-byte varints
        PER_CHANNEL_4BIT,  # 15 values per channel, 960 per tensor: one codebook per channel
        np.where(np.random.default_rng(5).random((64, 32, 3, 3)) < 0.7, 0, PER_CHANNEL_4BIT),  # sparse, per channel
    ],
    ids=["sparse-fp32", "int8", "codebook", "fp16", "all-zero", "empty", "scalar", "int64", "per-channel",
         "sparse-per-channel"],
)
def test_tensor_codec_is_bit_exact(array):
    meta, streams = encode_tensor(array)
    assert _same(decode_tensor(meta, streams), array)


def test_sparse_and_shared_values_shrink(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.standard_normal(100_000).astype(np.float32)
    sparse = np.where(rng.random(100_000) < 0.9, 0, dense).astype(np.float32)
    shared = rng.choice(rng.standard_normal(16).astype(np.float32), 100_000)
    per_channel = PER_CHANNEL_4BIT
    sizes = {k: compress_tensors({"w": v}, tmp_path / f"{k}.ccz") for k, v in
             {"dense": dense, "sparse": sparse, "shared": shared, "per_channel": per_channel}.items()}
    assert sizes["dense"] > 0.8 * dense.nbytes  # random floats do not compress
    assert sizes["sparse"] < 0.2 * dense.nbytes  # 10% of the values plus ~1 byte per index
    assert sizes["shared"] < 0.15 * dense.nbytes  # 4-bit worth of codes, entropy-coded
    # per-channel 4-bit grids: 4-bit codes plus 64 codebooks of 15 floats (~1.7 bits per weight here)
    # stay under 6 bits per weight; byte planes take ~13
    assert sizes["per_channel"] < per_channel.size * 6 / 8
    assert encode_tensor(per_channel)[0]["row_codebooks"] == 64 * 15


def test_checkpoint_round_trip_gives_identical_outputs(tiny_checkpoint, tmp_path):
    ckpt = tiny_checkpoint.derive(prune_model(copy.deepcopy(tiny_checkpoint.model), PruneConfig(ratio=0.8)),
                                  "prune", {})
    save_checkpoint(tmp_path / "p.pt", ckpt)
    sizes = compress_artifact(tmp_path / "p.pt", tmp_path / "p.ccz")
    assert sizes["size_compressed_bytes"] < (tmp_path / "p.pt").stat().st_size / 2.5  # 80% zeros
    restored = {k: torch.from_numpy(v) for k, v in decompress_tensors(tmp_path / "p.ccz").items()}
    model = copy.deepcopy(ckpt.model)
    model.load_state_dict(restored, strict=True)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(model.eval()(x), load_checkpoint(tmp_path / "p.pt").model(x))


def test_onnx_int8_round_trip_gives_identical_outputs(tiny_checkpoint, tiny_dataset, tmp_path):
    calib = calibration_batch(tiny_dataset, 4)
    export_all(tiny_checkpoint, calib, tmp_path, ExportConfig(formats=("ort_int8",)))
    path = tmp_path / "ort_int8.onnx"
    compress_artifact(path, tmp_path / "q.ccz")
    restored = decompress_tensors(tmp_path / "q.ccz")
    assert restored.keys() == artifact_tensors(path).keys()
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(restored[init.name], init.name))
    rebuilt = tmp_path / "rebuilt.onnx"
    onnx.save(model, str(rebuilt))
    x = calib[:8].numpy()
    outputs = [_run(p, x) for p in (path, rebuilt)]
    assert np.array_equal(outputs[0], outputs[1])


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_not_a_compressed_file(tmp_path):
    (tmp_path / "x.ccz").write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="not a cnn-compress compressed file"):
        decompress_tensors(tmp_path / "x.ccz")


def test_small_tensors_cost_their_bytes_not_a_frame_each(tmp_path):
    """A model's many batch-norm vectors: each stream is raw LZMA2, without the ~60-byte .xz frame
    that made 130 small tensors of a 4-bit ResNet-56 cost 37 KB for 16 KB of values."""
    rng = np.random.default_rng(0)
    vectors = {f"bn{i}.{k}": rng.standard_normal(16).astype(np.float32)
               for i in range(50) for k in ("weight", "bias", "running_mean", "running_var")}
    size = compress_tensors(vectors, tmp_path / "bn.ccz")
    raw = sum(v.nbytes for v in vectors.values())
    # incompressible floats plus about 6 bytes each, mostly their header entry: no codebook of all-distinct
    # values (it stored each value and a code for it: 26 bytes each) and no .xz frame (60 more each)
    assert size < raw + 10 * len(vectors)
    meta, streams = encode_tensor(vectors["bn0.weight"])
    assert "codebook" not in meta and sum(map(len, streams)) <= vectors["bn0.weight"].nbytes + 8
    assert all(_same(a, vectors[k]) for k, a in decompress_tensors(tmp_path / "bn.ccz").items())


def test_ccz1_files_still_decode(tmp_path, monkeypatch):
    """Files written before the raw streams (``CCZ1``, one .xz frame per stream) read back the same."""
    import lzma

    import cnn_compress.measure.compression as ccz

    tensors = {"w": PER_CHANNEL_4BIT, "b": np.arange(7, dtype=np.float32)}
    monkeypatch.setattr(ccz, "MAGIC", b"CCZ1")
    monkeypatch.setattr(ccz, "_pack", lambda data: lzma.compress(data, preset=6))
    compress_tensors(tensors, tmp_path / "old.ccz")
    monkeypatch.undo()
    assert (tmp_path / "old.ccz").read_bytes()[:4] == b"CCZ1"
    back = decompress_tensors(tmp_path / "old.ccz")
    assert _same(back["w"], tensors["w"]) and _same(back["b"], tensors["b"])


def test_a_damaged_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "w.ccz"
    compress_tensors({"w": PER_CHANNEL_4BIT}, path)
    data = bytearray(path.read_bytes())
    cut = tmp_path / "cut.ccz"
    cut.write_bytes(bytes(data[: len(data) - 200]))  # truncated: the last stream ends early
    with pytest.raises(CheckpointError, match="compressed file is damaged"):
        decompress_tensors(cut)
    data[8:12] = b"\xff\xff\xff\xff"  # the packed header overwritten
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        decompress_tensors(path)
