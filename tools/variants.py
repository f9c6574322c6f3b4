"""Write grids of variants (or of quantization formats) into params.yaml's ``variants`` section.

    python tools/variants.py grid r prune.ratio=0.3,0.5,0.7
        -> variants r-0.3 and r-0.7 (prune.ratio set in each); 0.5 resolves like `main`, the base's
           ratio, so that point is not added: it would repeat main's work (its rows are main's)
    python tools/variants.py grid order prune.ratio=0.5,0.8 prune.order=before_quantize,after_quantize \\
        --set quantize.formats=[fp32,int8_static]
        -> 4 variants, each building two formats
    python tools/variants.py formats main bits=2,3,4,5,6 scheme=symmetric,asymmetric --set epochs=0
        -> variant main builds 10 fixed-point artifacts (fixed2_symmetric ... fixed6_asymmetric): a
           bits x scheme grid that shares one pruned and fine-tuned model
    python tools/variants.py list
    python tools/variants.py drop r          -> removes the variants r-*

Values are YAML scalars (``0.3``, ``true``, ``[a, b]``). A grid's variants are named ``<grid>-<value>``
(one axis) or ``<grid>-<key><number>-<word>...`` (several: ``order-ratio0.5-after_quantize``), and
re-running a grid replaces its earlier points. A point whose resolved settings equal an existing
variant's is skipped, with a note naming that variant. After a grid, ``dvc status`` lists the stages
``dvc repro`` will run; ``dvc repro --dry`` cannot plan them: its run-cache lookup hashes every input
and stops at the first one a new variant has not written yet (its config, then its pruned model;
treeverse/dvc#9818). Only the ``variants`` block of params.yaml is rewritten (it must be the last
section); the rest, comments included, is kept. Every variant is resolved before anything is written, so a bad key or value stops here.
"""
from __future__ import annotations

import argparse
import itertools
import re
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cnn_compress.core.errors import UserError  # noqa: E402
from cnn_compress.variants.resolve import resolve_all  # noqa: E402


def parse_axis(text: str) -> tuple[str, list[Any]]:
    """``prune.ratio=0.3,0.5`` -> ("prune.ratio", [0.3, 0.5]); commas inside [...] do not split."""
    key, sep, values = text.partition("=")
    if not sep or not key or not values:
        raise UserError(f"{text!r}: expected KEY=VALUE[,VALUE...]")
    parts = [p for p in re.split(r",(?![^\[]*\])", values)]
    return key, [yaml.safe_load(p) for p in parts]


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def point_name(keys: list[str], values: tuple[Any, ...]) -> str:
    """``0.3`` for one axis; ``ratio0.3-asymmetric`` for several: numbers keep their key's last word
    (two numeric axes stay apart), words stand alone."""
    parts = [str(v) if isinstance(v, str) or len(keys) == 1 else f"{k.rsplit('.', 1)[-1]}{v}"
             for k, v in zip(keys, values, strict=True)]
    return re.sub(r"[^A-Za-z0-9_.-]", "", "-".join(parts))


def grid(variants: dict[str, Any], name: str, axes: list[tuple[str, list[Any]]], fixed: list[tuple[str, Any]]) -> list[str]:
    """Replace grid ``name``'s points in ``variants``; return the new points' names."""
    for old in [v for v in variants if v.startswith(f"{name}-")]:
        del variants[old]
    keys, points = [k for k, _ in axes], []
    for values in itertools.product(*(vals for _, vals in axes)):
        over: dict[str, Any] = {}
        for key, value in [*fixed, *zip(keys, values, strict=True)]:
            if key.count(".") < 1:
                raise UserError(f"{key}: name a section key, e.g. prune.ratio")
            set_path(over, key, value)
        points.append(f"{name}-{point_name(keys, values)}")
        variants[points[-1]] = over
    return points


def skip_duplicates(params: dict[str, Any], variants: dict[str, Any], points: list[str]) -> list[str]:
    """Drop the grid points that resolve exactly like a variant outside the grid (``main`` at the
    base's own ratio): DVC would build, time and store the same artifacts twice under two names.
    Returns one note per point dropped."""
    resolved = resolve_all(params | {"variants": variants})
    notes = []
    for point in points:
        twin = next((v for v in variants if v not in points and resolved[v] == resolved[point]), None)
        if twin is not None:
            del variants[point]
            notes.append(f"note: {point} resolves like variant {twin} (same settings for every stage): "
                         f"not added, its rows are {twin}'s")
    return notes


def formats(variants: dict[str, Any], variant: str, axes: list[tuple[str, list[Any]]], fixed: list[tuple[str, Any]],
            fmt_type: str) -> None:
    """One artifact per grid point in one variant: ``quantize.formats`` of that variant."""
    keys = [k for k, _ in axes]
    mapping = {}
    for values in itertools.product(*(vals for _, vals in axes)):
        settings = {"type": fmt_type} | dict(fixed) | dict(zip(keys, values, strict=True))
        label = "_".join(str(v) for k, v in zip(keys, values, strict=True) if k != "bits")
        bits = settings.get("bits", "")
        mapping[re.sub(r"[^A-Za-z0-9_.-]", "", f"{fmt_type}{bits}" + (f"_{label}" if label else ""))] = settings
    entry = variants.setdefault(variant, {}) or {}
    entry.setdefault("quantize", {})["formats"] = mapping
    variants[variant] = entry


def write_variants(path: Path, variants: dict[str, Any]) -> None:
    """Replace the ``variants:`` block (the file's last section) with one flow-style line per variant."""
    text = path.read_text()
    m = re.search(r"^variants:.*$", text, flags=re.M)
    if m is None:
        head = text.rstrip("\n") + "\n"
    else:
        rest = text[m.end():]
        if re.search(r"^\S", rest.lstrip("\n"), flags=re.M) and re.search(r"^[A-Za-z_]\w*:", rest, flags=re.M):
            raise UserError(f"{path}: `variants` must be the last section for this tool to rewrite it")
        head = text[: m.start()]
    lines = ["variants:"] + [f"  {name}: {yaml.safe_dump(over or {}, default_flow_style=True, width=10_000).strip()}"
                             for name, over in variants.items()]
    path.write_text(head + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grid", help="one variant per point of KEY=V1,V2 axes")
    g.add_argument("name")
    g.add_argument("axes", nargs="+")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set in every point")
    f = sub.add_parser("formats", help="one artifact per point, in one variant's quantize.formats")
    f.add_argument("variant")
    f.add_argument("axes", nargs="+")
    f.add_argument("--type", default="fixed")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sub.add_parser("list", help="print each variant and its overrides")
    d = sub.add_parser("drop", help="remove the variants of a grid")
    d.add_argument("name")
    args = parser.parse_args(argv)
    notes: list[str] = []
    try:
        params = yaml.safe_load(args.params.read_text()) or {}
        variants = dict(params.get("variants") or {})
        if args.command == "list":
            for name, over in variants.items():
                print(f"{name}: {yaml.safe_dump(over or {}, default_flow_style=True, width=10_000).strip()}")
            return 0
        if args.command == "drop":
            dropped = [v for v in variants if v.startswith(f"{args.name}-")]
            if not dropped:
                raise UserError(f"no variants named {args.name}-*")
            variants = {k: v for k, v in variants.items() if k not in dropped}
        else:
            axes = [parse_axis(a) for a in args.axes]
            fixed = [(k, v[0]) for k, v in map(parse_axis, args.set)]
            if args.command == "grid":
                points = grid(variants, args.name, axes, fixed)
                notes = skip_duplicates(params, variants, points) + [
                    "next: dvc repro (`dvc status` lists what it will run: `dvc repro --dry` stops at the first input "
                    "a new variant has not written yet, treeverse/dvc#9818)"]
            else:
                formats(variants, args.variant, axes, fixed, args.type)
        resolve_all(params | {"variants": variants})  # every variant valid before writing
        write_variants(args.params, variants)
    except (UserError, OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join([*notes, f"{args.params}: {len(variants)} variant(s): {', '.join(variants)}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
