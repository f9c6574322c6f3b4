"""Which N-bit weight formats a model's `select` split picks, with the rule fixed before the scores.

The deploy study's `cpu-chained` folder quantizes `d60s30kd30` to `w4_tensor` and `w3_tensor`.
Those two were first picked by an exploratory script that scored a grid on the whole test split,
the split the study reports. This script scores the same grid on `select` only and applies a rule
written down here, before any score: for each bit width, among the settings whose true compressed
size is at least ``--target``x smaller than the reference FP32 file, the one with the highest
`select` top-1 without fine-tuning (ties: the smaller file). The study's formats stand if they are
those picks; the table says "yes" or "no" per bit width. `report` accuracies are printed beside,
never read by the rule.

Grid: bits x {per_tensor, per_channel} x {minmax, mse} weight ranges, weights only, ``--skip``
layers (the stem and classifier) left in float, no fine-tuning, built by the quantize stage's own
``fixed_point`` and measured by the benchmark stage's own ``compress_artifact``.

    python bench/format_grid.py studies/deploy-cpu/cpu-chained/variants/d60s30kd30/finetuned.pt \
        --data studies/deploy-cpu/cpu-chained/data/prepared \
        --reference studies/deploy-cpu/cpu-chained/variants/dense/quantized/fp32.pt \
        --study w4_tensor=4,per_tensor,minmax w3_tensor=3,per_tensor,mse --out docs/format-grid.md
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
import torch  # noqa: E402

from cnn_compress.core.atomic import write_text  # noqa: E402
from cnn_compress.core.errors import UserError  # noqa: E402
from cnn_compress.data.dataset import REPORT, SELECT, calibration_batch, load_dataset  # noqa: E402
from cnn_compress.data.evaluation import predict_logits, score  # noqa: E402
from cnn_compress.measure.compression import artifact_size, compress_artifact  # noqa: E402
from cnn_compress.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from cnn_compress.quantize.config import FixedConfig  # noqa: E402
from cnn_compress.quantize.formats import fixed_point  # noqa: E402
from cnn_compress.runtimes.runners import load_runner  # noqa: E402

Setting = tuple[int, str, str]  # bits, granularity, weight range


def fail(message: str) -> None:
    """Bad input: one line on stderr and exit code 2, as the pipeline's stages do."""
    print(f"format_grid: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_study(items: list[str]) -> dict[str, Setting]:
    """``name=bits,granularity,range`` -> {name: setting}."""
    out = {}
    for item in items:
        name, _, spec = item.partition("=")
        parts = spec.split(",")
        if not name or len(parts) != 3 or not parts[0].isdigit():
            fail(f"--study {item!r}: expected name=bits,granularity,range (e.g. w4_tensor=4,per_tensor,minmax)")
        out[name] = (int(parts[0]), parts[1], parts[2])
    return out


def measure(ckpt, setting: Setting, skip: tuple[str, ...], ds, calib, workdir: Path) -> dict:
    """Build one setting as the quantize stage would, then size and score it as benchmark would."""
    bits, granularity, weight_range = setting
    cfg = FixedConfig(bits=bits, granularity=granularity, weight_range=weight_range, activations=False, skip=skip)
    cfg.check("grid")
    path = workdir / f"w{bits}_{granularity}_{weight_range}.pt"
    save_checkpoint(path, fixed_point(ckpt, cfg, calib))
    sizes = compress_artifact(path, workdir / f"{path.stem}.ccz")
    runner = load_runner(path, threads=2)
    row = {"setting": setting, "ccz": sizes["size_compressed_bytes"]}
    for split in (SELECT, REPORT):
        images, labels = ds.split(split)
        row[split] = score(predict_logits(runner.predict, images, ds.mean, ds.std, 256), labels)["top1"]
    return row


def picks(rows: list[dict], ref_bytes: int, target: float) -> dict[int, dict | None]:
    """Per bit width: the most accurate on `select` among settings at least ``target``x smaller."""
    out: dict[int, dict | None] = {}
    for bits in sorted({r["setting"][0] for r in rows}):
        ok = [r for r in rows if r["setting"][0] == bits and ref_bytes / r["ccz"] >= target]
        out[bits] = max(ok, key=lambda r: (r[SELECT], -r["ccz"])) if ok else None
    return out


def table(rows: list[dict], chosen: dict, study: dict[str, Setting], ref_bytes: int, target: float) -> list[str]:
    names = {s: n for n, s in study.items()}
    lines = [f"| bits | granularity | weight range | x smaller than FP32 | >= {target:g}x | select top-1 (decides) "
             "| report top-1 (not read) | picked on select | study format |",
             "|---:|---|---|---:|---|---:|---:|---|---|"]
    for r in rows:
        bits, gran, rng = r["setting"]
        shrink = ref_bytes / r["ccz"]
        lines.append(f"| {bits} | {gran} | {rng} | {shrink:.1f} | {'yes' if shrink >= target else 'no'} "
                     f"| {r[SELECT]:.2f} | {r[REPORT]:.2f} | {'**pick**' if chosen.get(bits) is r else ''} "
                     f"| {names.get(r['setting'], '')} |")
    return lines


def verdicts(chosen: dict[int, dict | None], study: dict[str, Setting]) -> list[str]:
    lines = []
    for name, setting in study.items():
        pick = chosen.get(setting[0])
        if pick is None:
            lines.append(f"- `{name}` ({', '.join(map(str, setting))}): **no**: no {setting[0]}-bit setting "
                         "reaches the size target" if setting[0] in chosen else
                         f"- `{name}`: **not in the grid** (add {setting[0]} to --bits)")
            continue
        same = pick["setting"] == setting
        lines.append(f"- `{name}` ({', '.join(map(str, setting))}): **{'yes' if same else 'no'}**, `select` picks "
                     f"{', '.join(map(str, pick['setting']))} at {setting[0]} bits")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="the fine-tuned model the formats quantize (finetuned.pt)")
    ap.add_argument("--data", type=Path, required=True, help="the prepared data set (with a select split)")
    ap.add_argument("--reference", type=Path, required=True, help="the FP32 file the size target divides")
    ap.add_argument("--bits", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--skip", nargs="*", default=["conv1", "linear"])
    ap.add_argument("--target", type=float, default=25.0, help="x smaller than --reference (true compressed size)")
    ap.add_argument("--study", nargs="*", default=[], help="the study's formats: name=bits,granularity,range")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    study = parse_study(args.study)
    if args.target <= 1:
        fail(f"--target must be > 1, got {args.target}")
    if not args.reference.is_file():
        fail(f"{args.reference}: reference FP32 file not found")
    try:
        ds = load_dataset(args.data)
        if not ds.has_selection:
            fail(f"{args.data}: the prepared data set has no select split (set data.select_fraction)")
        ckpt = load_checkpoint(args.checkpoint)
        modules = dict(ckpt.model.named_modules())
        if unknown := [n for n in args.skip if n not in modules]:
            fail(f"--skip {unknown[0]!r}: no such module in {args.checkpoint}")
        calib = calibration_batch(ds, 32)
        grid = [(b, g, r) for b in args.bits for g in ("per_tensor", "per_channel") for r in ("minmax", "mse")]
        with tempfile.TemporaryDirectory() as tmp:
            rows = []
            for setting in grid:
                rows.append(measure(ckpt, setting, tuple(args.skip), ds, calib, Path(tmp)))
                print(f"{setting}: {rows[-1][SELECT]:.2f} on select", file=sys.stderr)
    except UserError as exc:
        fail(str(exc))
    ref_bytes = artifact_size(args.reference)
    chosen = picks(rows, ref_bytes, args.target)
    out = ["# N-bit weight formats picked on `select`\n",
           f"Generated by `python bench/format_grid.py {args.checkpoint} --data {args.data} --reference {args.reference} "
           f"--study {' '.join(args.study)}` (torch {torch.__version__}; no timing in it).\n",
           f"Rule (fixed in the script; it never reads `report`): per bit width, among the settings at least {args.target:g}x "
           f"smaller than `{args.reference}` ({ref_bytes / 1024:.1f} KiB), the highest `select` top-1 without "
           f"fine-tuning. Weights only; {', '.join(args.skip) or 'no layer'} left in float. `select`: "
           f"{len(ds.splits[SELECT])} images; `report`: {len(ds.splits[REPORT])}.\n",
           *table(rows, chosen, study, ref_bytes, args.target), "", "Do the study's formats stand?", "",
           *verdicts(chosen, study)]
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        try:
            write_text(args.out, text)  # atomic: a failed write leaves the previous table
        except (OSError, UserError) as exc:
            fail(f"{args.out}: {exc}")


if __name__ == "__main__":
    main()
