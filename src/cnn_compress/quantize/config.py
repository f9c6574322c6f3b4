"""The ``quantize`` section: one small typed config per format, torchao style.

``quantize.formats`` is a list of names (each with its defaults) or a mapping from artifact name
to settings. The settings' type picks the handler (``quantize/formats.py`` keys handlers by config
class): ``type`` names it, or the artifact name does (``int8_static``; ``fixed4`` is a ``fixed``
config with 4 bits). So one variant can build ``fixed4_sym: {bits: 4}`` beside
``fixed4_asym: {type: fixed, bits: 4, scheme: asymmetric}``, each named for what it is.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from cnn_compress.core.config import coerce, require
from cnn_compress.core.errors import ConfigError


@dataclass(frozen=True)
class FormatConfig:
    """Base of every format's settings; ``TYPE`` is the name users write as ``type``."""

    TYPE: ClassVar[str] = ""
    TRAINS: ClassVar[bool] = False  # reads the finetune section (QAT, straight-through fine-tuning)

    def check(self, key: str) -> None:
        """Validate values; ``key`` is the dotted prefix errors name (``quantize.formats.fixed4``)."""

    def trains(self) -> bool:
        return self.TRAINS


@dataclass(frozen=True)
class Fp32Config(FormatConfig):
    TYPE: ClassVar[str] = "fp32"


@dataclass(frozen=True)
class Fp16Config(FormatConfig):
    TYPE: ClassVar[str] = "fp16"


@dataclass(frozen=True)
class Int8DynamicConfig(FormatConfig):
    TYPE: ClassVar[str] = "int8_dynamic"


@dataclass(frozen=True)
class Int8StaticConfig(FormatConfig):
    TYPE: ClassVar[str] = "int8_static"


@dataclass(frozen=True)
class Int8MixedConfig(FormatConfig):
    TYPE: ClassVar[str] = "int8_mixed"
    float_modules: tuple[str, ...] = ()  # module names kept FP32 (() = the classifier)


@dataclass(frozen=True)
class Int8QatConfig(FormatConfig):
    TYPE: ClassVar[str] = "int8_qat"
    TRAINS: ClassVar[bool] = True
    epochs: int = 1  # quantization-aware epochs (batch size, seed... from the finetune section)
    lr: float = 0.001  # small: QAT starts from converged weights and only adapts to rounding

    def check(self, key: str) -> None:
        require(self.epochs >= 1, f"{key}.epochs", f"must be >= 1, got {self.epochs}")
        require(self.lr > 0, f"{key}.lr", f"must be > 0, got {self.lr}")


@dataclass(frozen=True)
class FixedConfig(FormatConfig):
    """N-bit fixed point simulated in float (``fakequant.py``)."""

    TYPE: ClassVar[str] = "fixed"
    bits: int = 4
    scheme: Literal["symmetric", "asymmetric"] = "symmetric"  # signed zero-point-0 grid or [min, max]
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"  # weights: one grid per output channel
    activations: bool = True  # inputs of quantized layers on an N-bit grid too
    layers: tuple[str, ...] = ()  # module-name prefixes quantized (() = every conv and linear)
    skip: tuple[str, ...] = ()  # module names left in float, e.g. [conv1, linear]
    weight_range: Literal["minmax", "mse"] = "minmax"  # mse: clip each row's range to the least rounding error
    act_range: Literal["minmax", "percentile", "mse"] = "minmax"  # how calibration sets activation ranges
    act_percentile: float = 99.99  # act_range percentile: the tails beyond this are clipped
    epochs: int = 0  # fine-tuning epochs with the quantizers in place (straight-through estimator)
    lr: float = 0.001
    # mixed precision: sensitivity picks each layer's width (at most `bits`) so that the weight-weighted
    # mean is at most avg_bits, keeping sensitive layers wide; resolved by the variants stage into layer_bits
    allocation: Literal["uniform", "sensitivity"] = "uniform"
    avg_bits: float = 0.0  # allocation: sensitivity: the budget in mean bits per quantized weight
    layer_bits: dict[str, int] = field(default_factory=dict)  # layer name -> its width (overrides bits)

    def check(self, key: str) -> None:
        require(2 <= self.bits <= 8, f"{key}.bits", f"must be in [2, 8], got {self.bits}")
        for name, b in self.layer_bits.items():
            require(2 <= b <= 8, f"{key}.layer_bits.{name}", f"must be in [2, 8], got {b}")
        if self.allocation == "sensitivity":
            require(2 <= self.avg_bits <= self.bits, f"{key}.avg_bits",
                    f"must be in [2, bits={self.bits}] with allocation: sensitivity, got {self.avg_bits}")
        else:
            require(self.avg_bits == 0, f"{key}.avg_bits", "is the budget of allocation: sensitivity; set that too")
        require(50 < self.act_percentile <= 100, f"{key}.act_percentile", f"must be in (50, 100], got {self.act_percentile}")
        require(self.epochs >= 0, f"{key}.epochs", f"must be >= 0, got {self.epochs}")
        require(self.lr > 0, f"{key}.lr", f"must be > 0, got {self.lr}")

    def trains(self) -> bool:
        return self.epochs > 0

    def describe(self) -> str:
        """What the artifact is, for tables: ``4-bit asym per-tensor, weights only, ft 2``."""
        width = f"{self.bits}-bit"
        if self.layer_bits or self.allocation == "sensitivity":
            used = sorted(set(self.layer_bits.values()))
            widths = f"{used[0]}-{used[-1]}" if used else f"<={self.bits}"  # before the allocation resolves
            budget = f" (mean <= {self.avg_bits:g})" if self.allocation == "sensitivity" else ""
            width = f"mixed {widths}-bit{budget}"
        parts = [f"{width} {self.scheme[:3] if self.scheme == 'symmetric' else 'asym'}",
                 self.granularity.replace("_", "-"), "w+a" if self.activations else "weights only"]
        parts += [f"w {self.weight_range}"] if self.weight_range != "minmax" else []
        parts += [f"a {self.act_range}"] if self.activations and self.act_range != "minmax" else []
        parts += [f"layers {'/'.join(self.layers)}"] if self.layers else []
        parts += [f"skip {'/'.join(self.skip)}"] if self.skip else []
        return ", ".join(parts + ([f"ft {self.epochs}"] if self.epochs else []))


FORMAT_TYPES: dict[str, type[FormatConfig]] = {
    cls.TYPE: cls for cls in (Fp32Config, Fp16Config, Int8DynamicConfig, Int8StaticConfig, Int8MixedConfig,
                              Int8QatConfig, FixedConfig)
}
_FIXED_NAME = re.compile(r"fixed(\d+)")


def parse_format(name: str, raw: Any, key: str) -> FormatConfig:
    """One ``quantize.formats`` entry: its type from ``type`` or from the name, then its fields."""
    raw = {} if raw is None else raw
    require(isinstance(raw, dict), key, f"must be a mapping of settings, got {raw!r}")
    raw = dict(raw)
    implied: dict[str, Any] = {}
    type_name = raw.pop("type", None)
    if type_name is None:
        if name in FORMAT_TYPES:
            type_name = name
        elif m := _FIXED_NAME.fullmatch(name):
            type_name, implied = "fixed", {"bits": int(m.group(1))}
        else:
            raise ConfigError(f"{key}: cannot tell the format from the name; add type: "
                              f"one of {', '.join(FORMAT_TYPES)}")
    require(type_name in FORMAT_TYPES, f"{key}.type", f"unknown format type {type_name!r} "
            f"(known: {', '.join(FORMAT_TYPES)})")
    cfg = coerce(implied | raw, FORMAT_TYPES[type_name], key)
    cfg.check(key)
    return cfg


# a format's name is its artifact's name: its file, its benchmark row and its metrics file. The
# benchmark also lists these artifacts of every variant under their own names (and '<name>+compile',
# which '+' keeps apart), so a format named like one would overwrite its row.
BUILT_IN_ARTIFACTS = {"baseline": "trained model", "pruned": "pruned checkpoint", "finetuned": "fine-tuned checkpoint"}
# export formats (export/config.py FORMATS) share the variant's benchmark table and metrics folder;
# reserved by family, so an exporter added later is covered too
EXPORT_NAMES = re.compile(r"onnx|ort_.*|openvino_.*|tensorrt_.*", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_format_name(name: Any, key: str) -> None:
    """A format name is a file name and a row key: no path, no clash with the variant's other artifacts."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key}: a format name must be a non-empty string, got {name!r}")
    require(_NAME.fullmatch(name) is not None and ".." not in name, key,
            f"format name {name!r} is not a plain file name (letters, digits, '_', '.', '-', starting with "
            "a letter or digit; no '/', '\\', '..' or leading '.')")
    where = f"{key}.{name}"
    require(name.lower() not in BUILT_IN_ARTIFACTS, where,
            f"is reserved: the benchmark lists the {BUILT_IN_ARTIFACTS.get(name.lower())} under this name; "
            "rename the format")
    require(EXPORT_NAMES.fullmatch(name) is None, where,
            "is reserved for an export format (export.formats); rename the quantize format")


def parse_formats(value: Any, key: str) -> tuple[tuple[str, FormatConfig], ...]:
    """A list of names or a mapping name -> settings, as ordered (name, config) pairs."""
    if isinstance(value, (list, tuple)):
        require(all(isinstance(v, str) for v in value), key, f"list entries must be format names, got {value!r}")
        require(len(set(value)) == len(value), key, "has duplicates")
        value = {name: None for name in value}
    require(isinstance(value, dict), key, f"must be a list of names or a mapping, got {value!r}")
    require(len(value) > 0, key, "must name at least one format")
    for name in value:
        check_format_name(name, key)
    return tuple((name, parse_format(name, settings, f"{key}.{name}")) for name, settings in value.items())


@dataclass(frozen=True)
class QuantizeConfig:
    SECTION: ClassVar[str] = "quantize"
    COERCE: ClassVar[dict[str, Any]] = {"formats": parse_formats}
    formats: tuple[tuple[str, FormatConfig], ...] = tuple(
        (n, FORMAT_TYPES[n]()) for n in ("fp32", "fp16", "int8_dynamic", "int8_static", "int8_mixed", "int8_qat")
    ) + (("fixed4", FixedConfig(bits=4)),)
    calib_per_class: int = 32  # class-balanced calibration images from the training split

    def __post_init__(self) -> None:
        require(self.calib_per_class >= 1, "quantize.calib_per_class", "must be >= 1")

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.formats)

    def trains(self) -> bool:
        """Whether any format trains (then the finetune section is read too)."""
        return any(cfg.trains() for _, cfg in self.formats)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (each format's settings with its ``type``), for configs and metrics."""
        return {"formats": {n: {"type": c.TYPE} | dataclasses.asdict(c) for n, c in self.formats},
                "calib_per_class": self.calib_per_class}
