"""OpenVINO IR export (fp32 and NNCF INT8): parity with PyTorch, stats and sizes from the IR itself."""
import copy

import pytest
import torch

pytest.importorskip("openvino", reason="the openvino extra is not installed")
pytest.importorskip("nncf", reason="the openvino extra is not installed")

from cnn_compress.core.errors import CheckpointError  # noqa: E402
from cnn_compress.data.dataset import calibration_batch  # noqa: E402
from cnn_compress.export.config import ExportConfig  # noqa: E402
from cnn_compress.export.exporters import export_all, verify  # noqa: E402
from cnn_compress.measure.benchmark import benchmark_variant  # noqa: E402
from cnn_compress.measure.compression import compress_artifact  # noqa: E402
from cnn_compress.measure.config import BenchmarkConfig  # noqa: E402
from cnn_compress.measure.stats import artifact_stats  # noqa: E402
from cnn_compress.prune.config import PruneConfig  # noqa: E402
from cnn_compress.prune.pruning import prune_model  # noqa: E402
from cnn_compress.runtimes.runners import load_runner  # noqa: E402


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tiny_dataset, tmp_path_factory):
    pruned = tiny_checkpoint.derive(prune_model(copy.deepcopy(tiny_checkpoint.model), PruneConfig(ratio=0.5)),
                                    "prune", {})
    out = tmp_path_factory.mktemp("ov")
    cfg = ExportConfig(formats=("onnx", "openvino_fp32", "openvino_fp16", "openvino_int8"))
    files = export_all(pruned, calibration_batch(tiny_dataset, 4), out, cfg)
    return pruned, files, out


def test_ir_files_and_parity_with_pytorch(exported, tiny_dataset):
    pruned, files, out = exported
    assert files["openvino_fp32"] == "openvino_fp32.xml"
    assert (out / "openvino_fp32.bin").is_file() and (out / "openvino_int8.bin").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    checks = verify(pruned.model, files, out, tiny_dataset)
    assert checks["openvino_fp32"]["top1_agreement"] == 100.0 and checks["openvino_fp32"]["max_abs_diff"] < 1e-3
    assert checks["openvino_int8"]["top1_agreement"] >= 90.0
    assert checks["openvino_fp16"]["top1_agreement"] >= 98.0 and checks["openvino_fp16"]["max_abs_diff"] < 0.05
    half = (out / "openvino_fp16.bin").stat().st_size / (out / "openvino_fp32.bin").stat().st_size
    assert 0.45 < half < 0.55, half  # FP16 weights: half the bytes
    # sizes count the .bin: the fp32 IR holds at least its 4-byte weights
    n_params = sum(p.numel() for p in pruned.model.parameters())
    assert checks["openvino_fp32"]["size_bytes"] > 3 * n_params
    # the weights file: INT8 codes plus per-channel scales (the XML graph grows with FakeQuantize nodes)
    assert (out / "openvino_int8.bin").stat().st_size < 0.5 * (out / "openvino_fp32.bin").stat().st_size
    out5 = load_runner(out / "openvino_int8.xml").predict(torch.randn(5, 3, 32, 32))
    assert out5.shape == (5, pruned.num_classes) and out5.dtype == torch.float32  # dynamic batch


def test_stats_are_counted_from_the_ir(exported):
    """MACs and sparsity agree with the ONNX file of the same model; INT8 weights keep the zeros."""
    _, _, out = exported
    onnx_stats = artifact_stats(out / "onnx.onnx")
    for name in ("openvino_fp32", "openvino_fp16", "openvino_int8"):
        stats = artifact_stats(out / f"{name}.xml")
        assert stats["layers"] == onnx_stats["layers"], name
        assert stats["macs"] == onnx_stats["macs"], name
        assert stats["sparsity"] == pytest.approx(onnx_stats["sparsity"], abs=0.5), name
        assert stats["sparsity"] > 40.0, name  # pruned at 0.5


def test_benchmark_row_and_true_compressed_size(exported, tiny_dataset, tmp_path):
    _, _, out = exported
    cfg = BenchmarkConfig(batch_sizes=(1, 4), warmup=1, repeats=3)
    row = benchmark_variant(out / "openvino_int8.xml", tiny_dataset, cfg)
    assert row["runtime"].startswith("openvino-") and row["top1"] > 30.0
    on_disk = (out / "openvino_int8.xml").stat().st_size + (out / "openvino_int8.bin").stat().st_size
    assert row["size_bytes"] == on_disk
    sizes = compress_artifact(out / "openvino_int8.xml", tmp_path / "int8.ccz")
    assert 0 < sizes["size_compressed_bytes"] < on_disk


def test_corrupt_ir_is_one_line(exported, tmp_path):
    _, _, out = exported
    bad = tmp_path / "bad.xml"
    bad.write_text("<net>not an IR")
    with pytest.raises(CheckpointError, match="OpenVINO cannot read it"):
        load_runner(bad)


def test_entropy_calibration_is_refused_for_nncf(tiny_checkpoint, tiny_dataset, tmp_path):
    from cnn_compress.core.errors import UnsupportedFormatError

    cfg = ExportConfig(formats=("openvino_int8",), calib_method="entropy")
    with pytest.raises(UnsupportedFormatError, match="openvino_int8: NNCF quantization failed .NNCF has no 'entropy'"):
        export_all(tiny_checkpoint, calibration_batch(tiny_dataset, 1), tmp_path, cfg)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_nncf_draws_no_progress_bars_where_output_is_not_a_terminal(tiny_checkpoint, tiny_dataset, tmp_path, capfd):
    """Stage logs: NNCF's rich bars ('Statistics collection ━━━ 100%') are for terminals only."""
    import rich

    cfg = ExportConfig(formats=("openvino_int8",))
    export_all(tiny_checkpoint, calibration_batch(tiny_dataset, 2), tmp_path, cfg)
    out, err = capfd.readouterr()
    assert "━" not in out + err and "Statistics collection" not in out + err, out + err
    assert not rich.get_console().quiet  # only for the quantization


def test_ir_runs_static_per_batch_size_and_benchmark_app_cross_checks(exported, tiny_dataset):
    """The anchor as OpenVINO recommends it: one static-shape compile per batch size met, each
    agreeing with the dynamic IR; OpenVINO's own benchmark_app times the same file."""
    from cnn_compress.runtimes import ov_runtime

    _, _, out = exported
    static = ov_runtime.StaticShapes(out / "openvino_fp32.xml", threads=1)
    x = torch.randn(5, *tiny_dataset.images.shape[1:])
    full, one = static(x), static(x[:1])
    assert set(static.requests) == {(5, *x.shape[1:]), (1, *x.shape[1:])}
    for request in static.requests.values():  # compiled static, not with a dynamic batch axis
        assert request.get_compiled_model().input(0).get_partial_shape().is_static
    assert torch.allclose(full[:1], one, atol=1e-5)
    dynamic = load_runner(out / "openvino_fp32.xml").predict(x)
    assert torch.allclose(full, dynamic, atol=1e-4)
    figures = ov_runtime.benchmark_app(out / "openvino_int8.xml", batch=1, threads=1, seconds=1)
    assert 0 < figures["ms_median"] < 1000 and figures["ips"] > 0


def test_benchmark_app_report_lines_parse_in_us_and_ms_and_refuse_garbage():
    from cnn_compress.runtimes.ov_runtime import benchmark_app_figures

    log = "[ INFO ] Latency:\n[ INFO ]    Median:        140.41 us\n[ INFO ] Throughput:   2805.09 FPS\n"
    assert benchmark_app_figures(log) == {"ms_median": pytest.approx(0.14041), "ips": 2805.09}
    assert benchmark_app_figures(log.replace("140.41 us", "2.50 ms"))["ms_median"] == 2.5
    with pytest.raises(ValueError):
        benchmark_app_figures("[ ERROR ] Exception from src/inference")
