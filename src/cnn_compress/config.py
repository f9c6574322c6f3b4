"""Typed params: each ``params.yaml`` section maps to a frozen dataclass.

Unknown keys, wrong types and impossible values are rejected with one line naming the dotted key
(``prune.ratio: must be in [0, 1), got 1.5``). Defaults carry a comment saying why.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

import yaml

from cnn_compress.errors import ConfigError

T = TypeVar("T")

PARAMS_FILE = "params.yaml"


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


@dataclass(frozen=True)
class DataConfig:
    SECTION: ClassVar[str] = "data"
    name: str = "digits"  # offline default: scikit-learn's bundled 8x8 digits, no download
    source: str = ""  # cifar*: local archive or extracted folder ("" = download); imagefolder: dir or .tar(.gz)
    download_dir: str = "data/download"  # where cifar* archives are downloaded (checked by md5)
    seed: int = 0  # seeds the stratified split and the calibration subset
    val_fraction: float = 0.1  # held out from training for model selection curves
    test_fraction: float = 0.2  # every accuracy we report is on this split (ignored when the source has one)
    image_size: int = 32  # CIFAR-sized inputs so the same models serve every data set
    resize: bool = False  # imagefolder: resize every image to image_size (else all must already match)
    max_per_class: int = 0  # cap images per class and split (0 = all): tiny runs for tests and smoke checks
    mean: tuple[float, ...] = ()  # normalisation; () = measured on the training split
    std: tuple[float, ...] = ()  # e.g. the ImageNet values for the published akamaster ResNets

    def __post_init__(self) -> None:
        _require(0 <= self.val_fraction < 1, "data.val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        _require(0 < self.test_fraction < 1, "data.test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        _require(
            self.val_fraction + self.test_fraction < 1,
            "data.test_fraction",
            "val_fraction + test_fraction must leave images to train on",
        )
        _require(8 <= self.image_size <= 1024, "data.image_size", f"must be in [8, 1024], got {self.image_size}")
        _require(self.max_per_class >= 0, "data.max_per_class", "must be >= 0")
        _require(len(self.mean) in (0, 3), "data.mean", f"must list 3 channel values or none, got {list(self.mean)}")
        _require(len(self.std) == len(self.mean), "data.std", "must be given together with data.mean (3 values)")
        _require(all(v > 0 for v in self.std), "data.std", "must be > 0")


@dataclass(frozen=True)
class ModelConfig:
    SECTION: ClassVar[str] = "model"
    arch: str = "resnet20"  # the small CIFAR ResNet (0.27M params): trains in about a minute on 2 cores
    width: int = 0  # CIFAR ResNets only: channels of the first stage (0 = the published 16)
    input_size: int = 0  # *_imagenet models: resize inputs to this (e.g. 224) for transfer; 0 = off
    pretrained: str = ""  # path: this tool's checkpoint, a state_dict or {"state_dict": ...} file
    reset_head: bool = False  # re-initialise the classifier after loading pretrained (new class count)
    freeze: tuple[str, ...] = ()  # module-name prefixes whose parameters the train stage leaves fixed

    def __post_init__(self) -> None:
        _require(self.width >= 0, "model.width", f"must be >= 0, got {self.width}")
        _require(self.input_size >= 0, "model.input_size", f"must be >= 0, got {self.input_size}")
        _require(not self.reset_head or bool(self.pretrained), "model.reset_head", "needs model.pretrained")

    def arch_args(self, num_classes: int) -> dict[str, Any]:
        """Builder arguments: only the options that are set, so each arch sees what it takes."""
        args: dict[str, Any] = {"num_classes": num_classes}
        args |= {"width": self.width} if self.width else {}
        return args | ({"input_size": self.input_size} if self.input_size else {})


@dataclass(frozen=True)
class TrainConfig:
    SECTION: ClassVar[str] = "train"
    epochs: int = 15  # enough for > 95% on digits; CIFAR wants ~200
    batch_size: int = 64
    lr: float = 0.1  # peak learning rate of the cosine schedule
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # the CIFAR ResNet recipe
    label_smoothing: float = 0.0
    crop_pad: int = 2  # random-crop padding in pixels (0 = off); CIFAR uses 4
    flip: bool = False  # horizontal flips: off for digits (a flipped 2 is not a 2), on for CIFAR
    cutout: int = 0  # side of a random square zeroed per image (0 = off; 8 or 16 on CIFAR)
    seed: int = 0  # fixes init, shuffling and augmentation: CPU runs are bit-for-bit reproducible
    threads: int = 2  # torch intra-op threads; fixed so results do not depend on the machine's cores
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = CUDA when present

    def __post_init__(self) -> None:
        sec = self.SECTION
        _require(self.epochs >= 0, f"{sec}.epochs", f"must be >= 0, got {self.epochs}")
        _require(self.batch_size >= 1, f"{sec}.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.lr > 0, f"{sec}.lr", f"must be > 0, got {self.lr}")
        _require(0 <= self.momentum < 1, f"{sec}.momentum", f"must be in [0, 1), got {self.momentum}")
        _require(self.weight_decay >= 0, f"{sec}.weight_decay", "must be >= 0")
        _require(0 <= self.label_smoothing < 1, f"{sec}.label_smoothing", "must be in [0, 1)")
        _require(self.crop_pad >= 0, f"{sec}.crop_pad", "must be >= 0")
        _require(self.cutout >= 0, f"{sec}.cutout", "must be >= 0")
        _require(self.threads >= 1, f"{sec}.threads", f"must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class RatioRow:
    """One row of ``finetune.by_ratio``: settings for models pruned at most ``upto``."""

    SECTION: ClassVar[str] = "finetune.by_ratio[]"
    upto: float = 1.0
    epochs: int = 5
    lr: float = 0.01


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    SECTION: ClassVar[str] = "finetune"
    epochs: int = 5  # recovers most of the accuracy lost to 50% sparsity on digits
    lr: float = 0.01  # a tenth of training's: the weights are already good
    by_ratio: tuple[RatioRow, ...] = ()  # harder pruning, longer fine-tuning: first row with ratio <= upto wins

    def __post_init__(self) -> None:
        super().__post_init__()
        uptos = [r.upto for r in self.by_ratio]
        _require(uptos == sorted(uptos), "finetune.by_ratio", "rows must be sorted by upto")
        for i, row in enumerate(self.by_ratio):
            _require(0 <= row.upto <= 1, f"finetune.by_ratio[{i}].upto", f"must be in [0, 1], got {row.upto}")
            _require(row.epochs >= 0, f"finetune.by_ratio[{i}].epochs", "must be >= 0")
            _require(row.lr > 0, f"finetune.by_ratio[{i}].lr", "must be > 0")

    def for_ratio(self, ratio: float) -> FinetuneConfig:
        """These settings with epochs and lr from the first ``by_ratio`` row covering ``ratio``."""
        row = next((r for r in self.by_ratio if ratio <= r.upto), None)
        return self if row is None else dataclasses.replace(self, epochs=row.epochs, lr=row.lr)


@dataclass(frozen=True)
class PruneConfig:
    SECTION: ClassVar[str] = "prune"
    method: str = "l1_unstructured"  # key into the pruning registry: l1_unstructured | structured
    scope: Literal["global", "layer"] = "global"  # one threshold for all layers, or the ratio in every layer
    ratio: float = 0.5  # unstructured: fraction of conv + linear weights zeroed; structured: of channels
    importance: Literal["l1", "l2", "taylor", "bn_scale"] = "l1"  # structured: how channel groups are ranked
    round_to: int = 1  # structured: keep channel counts multiples of this (8 suits SIMD / tensor cores)
    max_layer_ratio: float = 0.9  # structured + global: never remove more than this from one layer
    ignore: tuple[str, ...] = ()  # module names left unpruned (the classifier always is)
    schedule: Literal["oneshot", "iterative"] = "oneshot"  # iterative: reach ratio in `steps` equal steps
    steps: int = 1  # iterative: pruning steps (ratio * k / steps after step k)
    step_epochs: int = 0  # iterative: training epochs after each step (finetune.* hyperparameters)
    order: Literal["before_quantize", "after_quantize"] = "before_quantize"  # after: prune the quantized weights
    ratios: tuple[float, ...] = ()  # sweep: one cached prune..benchmark branch per ratio under sweeps/<ratio>/

    def __post_init__(self) -> None:
        _require(0 <= self.ratio < 1, "prune.ratio", f"must be in [0, 1), got {self.ratio}")
        for i, r in enumerate(self.ratios):
            _require(0 <= r < 1, f"prune.ratios[{i}]", f"must be in [0, 1), got {r}")
        _require(len(set(self.ratios)) == len(self.ratios), "prune.ratios", "has duplicates")
        _require(self.round_to >= 1, "prune.round_to", f"must be >= 1, got {self.round_to}")
        _require(0 < self.max_layer_ratio < 1, "prune.max_layer_ratio", "must be in (0, 1)")
        _require(self.steps >= 1, "prune.steps", f"must be >= 1, got {self.steps}")
        _require(self.step_epochs >= 0, "prune.step_epochs", "must be >= 0")
        _require(self.schedule == "iterative" or self.steps == 1, "prune.steps",
                 "needs prune.schedule: iterative when > 1")
        _require(self.order == "before_quantize" or (self.method == "l1_unstructured" and self.schedule == "oneshot"),
                 "prune.order", "after_quantize prunes quantized weights one-shot: needs method l1_unstructured, "
                 "schedule oneshot")


def _check_sweep_formats(formats: tuple[str, ...] | None, key: str, allow_empty: bool = False) -> None:
    if formats is not None:
        _require(allow_empty or len(formats) > 0, key, "must name at least one format, or be null")
        _require(len(set(formats)) == len(formats), key, "has duplicates")


@dataclass(frozen=True)
class QuantizeConfig:
    SECTION: ClassVar[str] = "quantize"
    formats: tuple[str, ...] = ("fp32", "fp16", "int8_dynamic", "int8_static", "int8_mixed", "int8_qat", "fixed4")
    calib_per_class: int = 32  # class-balanced calibration images from the training split
    mixed_float: tuple[str, ...] = ()  # int8_mixed: module names kept FP32 (() = the classifier)
    qat_epochs: int = 1  # int8_qat: epochs of quantization-aware training (other settings: finetune.*)
    qat_lr: float = 0.001  # small: QAT starts from converged weights and only adapts to rounding
    fixed_scheme: Literal["symmetric", "asymmetric"] = "symmetric"  # fixed<N>: signed zero-point-0 grid or [min, max]
    fixed_granularity: Literal["per_channel", "per_tensor"] = "per_channel"  # fixed<N> weights: one grid per output channel
    fixed_activations: bool = True  # fixed<N>: inputs of quantized layers on an N-bit grid too
    fixed_layers: tuple[str, ...] = ()  # fixed<N>: module-name prefixes quantized (() = every conv and linear)
    fixed_skip: tuple[str, ...] = ()  # fixed<N>: module names left in float, e.g. [conv1, linear]
    fixed_epochs: int = 0  # fixed<N>: fine-tuning epochs with the quantizers in place (straight-through)
    fixed_lr: float = 0.001
    sweep_formats: tuple[str, ...] | None = None  # sweep branches build these instead (null = formats): trims wide sweeps

    def __post_init__(self) -> None:
        _require(len(self.formats) > 0, "quantize.formats", "must name at least one format")
        _require(len(set(self.formats)) == len(self.formats), "quantize.formats", "has duplicates")
        _check_sweep_formats(self.sweep_formats, "quantize.sweep_formats")
        _require(self.calib_per_class >= 1, "quantize.calib_per_class", "must be >= 1")
        _require(self.qat_epochs >= 1, "quantize.qat_epochs", f"must be >= 1, got {self.qat_epochs}")
        _require(self.qat_lr > 0, "quantize.qat_lr", f"must be > 0, got {self.qat_lr}")
        _require(self.fixed_epochs >= 0, "quantize.fixed_epochs", f"must be >= 0, got {self.fixed_epochs}")
        _require(self.fixed_lr > 0, "quantize.fixed_lr", f"must be > 0, got {self.fixed_lr}")


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
    sweep_formats: tuple[str, ...] | None = None  # sweep branches export these instead (null = formats; [] = none)

    def __post_init__(self) -> None:
        _check_sweep_formats(self.sweep_formats, "export.sweep_formats", allow_empty=True)
        _require(1 <= self.trt_opt_batch <= self.trt_max_batch, "export.trt_opt_batch",
                 "must be in [1, export.trt_max_batch]")
        _require(self.trt_workspace_mb >= 16, "export.trt_workspace_mb", "must be >= 16")
        _require(len(set(self.formats)) == len(self.formats), "export.formats", "has duplicates")
        _require(13 <= self.opset <= 23, "export.opset", f"must be in [13, 23], got {self.opset}")
        _require(self.calib_per_class >= 1, "export.calib_per_class", "must be >= 1")


@dataclass(frozen=True)
class BenchmarkConfig:
    SECTION: ClassVar[str] = "benchmark"
    batch_sizes: tuple[int, ...] = (1, 64)  # smallest gives latency, largest gives throughput
    warmup: int = 5  # untimed runs first: allocators, caches and lazy init settle
    repeats: int = 30  # timed runs per batch size; we report median and p90
    max_seconds: float = 2.0  # stop timing a (variant, batch) early: CPU fp16 is ~20x slower than fp32
    threads: int = 1  # one thread: least noisy on shared machines, comparable across runtimes
    eval_batch_size: int = 256
    compile: tuple[str, ...] = ("fp32", "int8_static")  # also timed under torch.compile (rows '<name>+compile')

    def __post_init__(self) -> None:
        _require(len(self.batch_sizes) > 0, "benchmark.batch_sizes", "must not be empty")
        _require(all(b >= 1 for b in self.batch_sizes), "benchmark.batch_sizes", "must all be >= 1")
        _require(self.warmup >= 0, "benchmark.warmup", "must be >= 0")
        _require(self.repeats >= 1, "benchmark.repeats", "must be >= 1")
        _require(self.threads >= 1, "benchmark.threads", "must be >= 1")
        _require(self.max_seconds > 0, "benchmark.max_seconds", "must be > 0")
        _require(self.eval_batch_size >= 1, "benchmark.eval_batch_size", "must be >= 1")


SECTIONS: dict[str, type] = {
    cls.SECTION: cls
    for cls in (
        DataConfig,
        ModelConfig,
        TrainConfig,
        PruneConfig,
        FinetuneConfig,
        QuantizeConfig,
        ExportConfig,
        BenchmarkConfig,
    )
}


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml; reject a missing file, bad YAML and unknown sections."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    for name in raw:
        if name not in SECTIONS:
            raise ConfigError(f"{name}: unknown params section{_suggest(str(name), SECTIONS)}")
    return raw


def load_section(cls: type[T], params: dict[str, Any] | None = None) -> T:
    """Parse and validate one section (the dataclass's SECTION) of params.yaml."""
    params = read_params() if params is None else params
    return parse_section(cls, params.get(cls.SECTION) or {})  # type: ignore[attr-defined]


def parse_section(cls: type[T], raw: Any) -> T:
    section = cls.SECTION  # type: ignore[attr-defined]
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{section}.{key}: unknown key{_suggest(str(key), fields)}")
        values[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**values)


def _suggest(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(known))})"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a field's type; YAML lists become tuples (frozen, hashable)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        _require(value in choices, key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is tuple:
        item = typing.get_args(hint)[0]
        _require(isinstance(value, (list, tuple)), key, f"must be a list, got {value!r}")
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: unexpected value {value!r}")
    if dataclasses.is_dataclass(hint):
        _require(isinstance(value, dict), key, f"must be a mapping, got {value!r}")
        fields = {f.name for f in dataclasses.fields(hint)}
        for k in value:
            _require(k in fields, f"{key}.{k}", f"unknown key{_suggest(str(k), fields)}")
        nested = typing.get_type_hints(hint)
        return hint(**{k: _coerce(v, nested[k], f"{key}.{k}") for k, v in value.items()})
    if hint is type(None):
        _require(value is None, key, f"must be null, got {value!r}")
        return None
    if hint is bool:
        _require(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        _require(isinstance(value, int) and not isinstance(value, bool), key, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        _require(ok, key, f"must be a number, got {value!r}")
        return float(value)
    if hint is str:
        _require(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported field type {hint}")  # a bug in this module, not user input


def to_dict(cfg: Any) -> dict[str, Any]:
    """A resolved config as plain data, for self-describing checkpoints and metrics."""
    out = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def stage_args(ratio: bool = False, argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of a stage script.

    ``--dir``: where this run's models/, metrics/ and plots/ live (``.`` for the main chain,
    ``sweeps/<ratio>`` for a sweep branch); shared inputs (data/prepared, models/baseline.pt) stay
    at the top. ``--ratio`` (prune only) overrides ``prune.ratio``: dvc.yaml's matrix passes each
    entry of ``prune.ratios`` this way, so a branch does not depend on the list itself.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=Path("."))
    if ratio:
        parser.add_argument("--ratio", type=float, default=None)
    args = parser.parse_args(argv)
    args.branch = args.dir != Path(".")  # a sweep branch: takes quantize/export.sweep_formats
    return args


def branch_formats(cfg: T, branch: bool) -> tuple[T, str]:
    """The section a run uses and the key its formats came from: a sweep branch builds
    ``<section>.sweep_formats`` when that is set, so a wide sweep need not build every format."""
    chosen = getattr(cfg, "sweep_formats", None)
    if branch and chosen is not None:
        return dataclasses.replace(cfg, formats=chosen), f"{cfg.SECTION}.sweep_formats"  # type: ignore[attr-defined]
    return cfg, f"{cfg.SECTION}.formats"  # type: ignore[attr-defined]


__all__ = [
    "BenchmarkConfig",
    "DataConfig",
    "ExportConfig",
    "FinetuneConfig",
    "ModelConfig",
    "PruneConfig",
    "QuantizeConfig",
    "TrainConfig",
    "branch_formats",
    "field",
    "load_section",
    "parse_section",
    "read_params",
    "to_dict",
]
