"""Variants: named configurations of everything after training, resolved per stage.

A variant is an override of the base sections (``prune``, ``finetune``, ``quantize``, ``export``,
``benchmark``) of ``params.yaml``: each key it sets replaces the base key of the same name (a list
or mapping value is replaced whole), every other key is inherited. The main chain is the variant
``main``; a grid (``tools/variants.py grid``) writes one variant per point.

Each variant stage reads one resolved file, ``configs/<variant>/<stage>.json``, holding exactly
the sections that stage reads after resolution (the prune stage sees the finetune section only when
it trains between steps, the quantize stage sees it only when a format trains, and the prune
section only with ``order: after_quantize``). DVC compares those files by content, so an edit
re-runs only the variants and stages whose resolved settings changed.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnn_compress.core import atomic
from cnn_compress.core.config import parse_section, require, to_dict
from cnn_compress.core.errors import ConfigError
from cnn_compress.core.names import select_names
from cnn_compress.export.config import ExportConfig, unavailable
from cnn_compress.measure.config import BenchmarkConfig
from cnn_compress.prune.config import PRUNABLE_AFTER_QUANTIZE, PruneConfig
from cnn_compress.quantize.config import FixedConfig, QuantizeConfig
from cnn_compress.sensitivity.allocate import layer_bits, prune_ratios
from cnn_compress.train.config import FinetuneConfig

BASE_SECTIONS: dict[str, type] = {cls.SECTION: cls for cls in  # type: ignore[attr-defined]
                                  (PruneConfig, FinetuneConfig, QuantizeConfig, ExportConfig, BenchmarkConfig)}
STAGES = ("prune", "finetune", "quantize", "export", "benchmark")
CONFIG_DIR = Path("configs")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def variant_overrides(params: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """``variants`` as name -> section -> overridden keys, checked for shape and names."""
    raw = params.get("variants")
    require(isinstance(raw, dict) and len(raw) > 0, "variants",
            "must map at least one variant name to its overrides (the main chain is `main: {}`)")
    out = {}
    for name, over in raw.items():
        key = f"variants.{name}"
        require(isinstance(name, str) and NAME.fullmatch(name) is not None, key,
                "a variant name holds letters, digits, '_', '.', '-' and starts with a letter or digit")
        over = {} if over is None else over
        require(isinstance(over, dict), key, f"must be a mapping of sections, got {over!r}")
        for section, keys in over.items():
            require(section in BASE_SECTIONS, f"{key}.{section}",
                    f"a variant overrides only {', '.join(BASE_SECTIONS)} (data, model and train are shared)")
            require(isinstance(keys, dict), f"{key}.{section}", f"must be a mapping of keys, got {keys!r}")
        out[name] = over
    return out


def _parse(cls: type, base: dict[str, Any], over: dict[str, Any], variant: str) -> Any:
    """The section with the variant's keys over the base's; an error in an overridden key is named
    ``variants.<name>.<section>.<key>``, one in an inherited key by its base name."""
    try:
        return parse_section(cls, base | over)
    except ConfigError as exc:
        msg = str(exc)
        if any(msg.startswith(f"{cls.SECTION}.{k}") for k in over):  # type: ignore[attr-defined]
            raise ConfigError(f"variants.{variant}.{msg}") from None
        raise


def allocate(prune: PruneConfig, quantize: QuantizeConfig, table: dict[str, Any] | None,
             name: str) -> tuple[PruneConfig, QuantizeConfig]:
    """``allocation: sensitivity`` made explicit: per-layer ratios and widths from the sensitivity
    table, written into the resolved configs (so a variant re-runs when its allocation changes).
    Without a table (None: validating params, not running the stage) they stay unresolved."""
    if table is None:
        return prune, quantize
    try:
        if prune.allocation == "sensitivity" and prune.ratio == 0:  # nothing to spread (a sweep's 0% point)
            prune = dataclasses.replace(prune, allocation="uniform")
        elif prune.allocation == "sensitivity" and prune.order == "before_quantize":
            prune = dataclasses.replace(prune, layer_ratios=prune_ratios(table, prune.ratio, prune.ignore))
    except ConfigError as exc:
        raise ConfigError(f"variants.{name}: {exc}") from None
    formats = []
    for fmt_name, fmt in quantize.formats:
        if isinstance(fmt, FixedConfig) and fmt.allocation == "sensitivity":
            try:
                fmt = dataclasses.replace(fmt, layer_bits=mixed_widths(fmt, table))
            except ConfigError as exc:
                raise ConfigError(f"variants.{name}.quantize.formats.{fmt_name}: {exc}") from None
        formats.append((fmt_name, fmt))
    return prune, dataclasses.replace(quantize, formats=tuple(formats))


def mixed_widths(fmt: FixedConfig, table: dict[str, Any]) -> dict[str, int]:
    """A fixed-point format's per-layer widths, allocated on weight-only measurements made with the
    same grid (anything else would allocate on costs the table did not measure)."""
    require(not fmt.activations, "activations", "allocation: sensitivity allocates weight widths from "
            "weight-only measurements; set activations: false")
    measured = table.get("config") or {}
    for key in ("scheme", "granularity", "weight_range"):
        if key in measured and measured[key] != getattr(fmt, key):
            raise ConfigError(f"{key}: {getattr(fmt, key)} differs from the sensitivity stage's grid "
                              f"({measured[key]}); set sensitivity.{key}: {getattr(fmt, key)} or match it")
    names = select_names([row["layer"] for row in table["layers"]], fmt.layers, fmt.skip)
    return layer_bits(table, names, fmt.avg_bits, fmt.bits)


def resolve_variant(params: dict[str, Any], name: str, over: dict[str, dict[str, Any]],
                    table: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """stage -> the plain-data sections that stage reads, for one variant (``table``: the
    sensitivity stage's measurements, for sensitivity allocations)."""
    cfg = {s: _parse(cls, params.get(s) or {}, over.get(s, {}), name) for s, cls in BASE_SECTIONS.items()}
    prune, quantize = allocate(cfg["prune"], cfg["quantize"], table, name)
    finetune = cfg["finetune"]
    if prune.order == "after_quantize" and (bad := [n for n, f in quantize.formats if f.TYPE not in PRUNABLE_AFTER_QUANTIZE]):
        raise ConfigError(f"variants.{name}: prune.order: after_quantize cannot prune the weights of {', '.join(bad)} "
                          f"(supported types: {', '.join(PRUNABLE_AFTER_QUANTIZE)})")
    # after_quantize: the prune stage passes the model through, so its ratio is the quantize stage's alone
    passthrough = dataclasses.replace(prune, ratio=0.0) if prune.order == "after_quantize" else prune
    plain: dict[str, Callable[[], dict[str, Any]]] = {
        "prune": lambda: to_dict(prune), "finetune": lambda: to_dict(finetune), "quantize": quantize.as_dict,
        "export": lambda: to_dict(cfg["export"]), "benchmark": lambda: to_dict(cfg["benchmark"])}
    reads = {
        "prune": ["prune"] + (["finetune"] if any(p.schedule == "iterative" and p.step_epochs
                                                  for p in prune.passes()) else []),
        "finetune": ["finetune"],
        "quantize": ["quantize"] + (["finetune"] if quantize.trains() else [])
                    + (["prune"] if prune.order == "after_quantize" else []),
        "export": ["export"],
        "benchmark": ["benchmark"],
    }
    out = {stage: {s: plain[s]() for s in sections} for stage, sections in reads.items()}
    out["prune"]["prune"] = to_dict(passthrough)
    return out


def resolve_all(params: dict[str, Any], table: dict[str, Any] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """variant -> stage -> sections; every variant is validated before anything is written."""
    for section, cls in BASE_SECTIONS.items():  # a bad base key is named as such, once
        parse_section(cls, params.get(section) or {})
    return {name: resolve_variant(params, name, over, table) for name, over in variant_overrides(params).items()}


def check_machine(params: dict[str, Any], resolved: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Refuse a variant whose export formats this machine cannot build (TensorRT without a GPU...)
    now, not at its export stage after prune, finetune and quantize have run."""
    overrides = variant_overrides(params)
    for name, stages in resolved.items():
        for fmt in stages["export"]["export"]["formats"]:
            if reason := unavailable(fmt):
                key = f"variants.{name}.export.formats" if "formats" in overrides[name].get("export", {}) \
                    else f"export.formats (variant {name})"
                raise ConfigError(f"{key}: {fmt} cannot run on this machine: {reason}")


def write_configs(resolved: dict[str, dict[str, dict[str, Any]]], root: Path = CONFIG_DIR) -> list[Path]:
    """One JSON file per variant and stage (sorted keys: same settings, same bytes)."""
    written = []
    for name, stages in resolved.items():
        for stage, sections in stages.items():
            path = root / name / f"{stage}.json"
            atomic.write_json(path, sections)
            written.append(path)
    return written


def config_path(variant: str, stage: str, root: Path = CONFIG_DIR) -> Path:
    return root / variant / f"{stage}.json"
