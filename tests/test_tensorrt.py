"""TensorRT formats: what runs anywhere (the clear error, the ONNX models the engines are built
from) and the engine round trip itself, which needs the ``tensorrt`` extra and a CUDA GPU."""
import copy

import onnx
import pytest
import torch
from onnx import numpy_helper

from cnn_compress.core.errors import ConfigError, UnsupportedFormatError
from cnn_compress.data.dataset import calibration_batch
from cnn_compress.export.config import ExportConfig
from cnn_compress.export.exporters import check_formats, export_all, verify, write_onnx, write_qdq_onnx
from cnn_compress.runtimes import trt_engine
from cnn_compress.runtimes.runners import load_runner

TRT_MISSING = trt_engine.unavailable()
FORMATS = ("tensorrt_fp32", "tensorrt_fp16", "tensorrt_int8")


@pytest.mark.skipif(TRT_MISSING is None, reason="TensorRT and CUDA are present: the formats can run here")
@pytest.mark.parametrize("fmt", FORMATS)
def test_tensorrt_formats_fail_clearly_without_tensorrt(fmt):
    with pytest.raises(UnsupportedFormatError, match=f"export.formats: {fmt} cannot run on this machine: "):
        check_formats(("onnx", fmt))


def test_trt_config_is_checked():
    with pytest.raises(ConfigError, match="export.trt_opt_batch: must be in"):
        ExportConfig(trt_opt_batch=512, trt_max_batch=256)


def test_int8_onnx_for_tensorrt_is_symmetric_with_zero_point_zero(tiny_checkpoint, tiny_dataset, tmp_path):
    """Explicit quantization in TensorRT wants signed INT8 Q/DQ with zero-point 0 everywhere."""
    calib = calibration_batch(tiny_dataset, 4)
    path = tmp_path / "trt_int8.onnx"
    write_qdq_onnx(tiny_checkpoint.model, calib, path, 18, "minmax", symmetric=True)
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(z.dtype.name == "int8" and (z == 0).all() for z in zero_points)
    checks = verify(tiny_checkpoint.model, {"trt_int8": path.name}, tmp_path, tiny_dataset)
    assert checks["trt_int8"]["top1_agreement"] >= 90.0  # ONNX Runtime runs the same Q/DQ graph


def test_fp16_onnx_for_tensorrt_is_fp16(tiny_checkpoint, tiny_dataset, tmp_path):
    """Strongly typed engines take their precision from the model: FP16 weights and input."""
    path = tmp_path / "fp16.onnx"
    x = calibration_batch(tiny_dataset, 1)
    write_onnx(copy.deepcopy(tiny_checkpoint.model).half(), x[:2].half(), path, 18, dtype=None)
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    conv_weights = [i for i in model.graph.initializer if i.dims and len(i.dims) == 4]
    assert conv_weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in conv_weights)


@pytest.mark.skipif(TRT_MISSING is not None, reason=f"TensorRT engines cannot be built here: {TRT_MISSING}")
def test_tensorrt_engines_build_run_and_agree(tiny_checkpoint, tiny_dataset, tmp_path):
    calib = calibration_batch(tiny_dataset, 4)
    files = export_all(tiny_checkpoint, calib, tmp_path, ExportConfig(formats=FORMATS, trt_max_batch=256))
    checks = verify(tiny_checkpoint.model, files, tmp_path, tiny_dataset)
    assert checks["tensorrt_fp32"]["top1_agreement"] == 100.0 and checks["tensorrt_fp32"]["max_abs_diff"] < 1e-2
    assert checks["tensorrt_fp16"]["top1_agreement"] >= 95.0
    assert checks["tensorrt_int8"]["top1_agreement"] >= 90.0
    out = load_runner(tmp_path / files["tensorrt_int8"]).predict(torch.randn(5, 3, 32, 32))
    assert out.shape == (5, tiny_checkpoint.num_classes) and out.dtype == torch.float32
