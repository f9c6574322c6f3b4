"""The ``export`` section: deployable formats and their calibration."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import ClassVar, Literal

from cnn_compress.core.config import require

# every name export/exporters.py registers (tests/test_quantize_export.py keeps the two equal): the
# variants stage rejects an unknown format before any variant runs, without importing the exporters
FORMATS = ("onnx", "ort_int8", "openvino_fp32", "openvino_fp16", "openvino_int8", "tensorrt_fp32", "tensorrt_fp16",
           "tensorrt_int8")


def unavailable(name: str) -> str | None:
    """Why this machine cannot build export format ``name`` (None when it can), without importing
    the runtimes: the variants stage refuses such a variant before prune, finetune and quantize run.
    The export stage checks again with the runtimes themselves (runtimes/trt_engine.py, ov_runtime.py)."""
    if name.startswith("tensorrt_"):
        if importlib.util.find_spec("tensorrt") is None:
            return "the 'tensorrt' package is not installed (pip install 'cnn-compress[tensorrt]')"
        import torch  # only where TensorRT is installed: a second of import for the CUDA check

        return None if torch.cuda.is_available() else "TensorRT needs a CUDA GPU and torch sees none"
    if name.startswith("openvino_"):
        missing = [m for m in ("openvino", "nncf") if importlib.util.find_spec(m) is None]
        return f"{missing[0]} is not installed (pip install 'cnn-compress[openvino]')" if missing else None
    return None


@dataclass(frozen=True)
class ExportConfig:
    SECTION: ClassVar[str] = "export"
    formats: tuple[str, ...] = ("onnx", "ort_int8")
    opset: int = 18  # recent enough for every op we emit, old enough for every runtime
    calib_per_class: int = 32  # as quantize.calib_per_class, for ONNX Runtime's static INT8
    calib_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    trt_opt_batch: int = 1  # tensorrt_*: the batch the engine is tuned for (1 = latency)
    trt_max_batch: int = 256  # tensorrt_*: largest batch the engine accepts (the evaluation batch)
    trt_workspace_mb: int = 1024  # tensorrt_*: builder scratch memory

    def __post_init__(self) -> None:
        require(1 <= self.trt_opt_batch <= self.trt_max_batch, "export.trt_opt_batch",
                 "must be in [1, export.trt_max_batch]")
        require(self.trt_workspace_mb >= 16, "export.trt_workspace_mb", "must be >= 16")
        require(len(set(self.formats)) == len(self.formats), "export.formats", "has duplicates")
        for name in self.formats:
            require(name in FORMATS, "export.formats", f"unknown format {name!r} (known: {', '.join(sorted(FORMATS))})")
        require(13 <= self.opset <= 23, "export.opset", f"must be in [13, 23], got {self.opset}")
        require(self.calib_per_class >= 1, "export.calib_per_class", "must be >= 1")
