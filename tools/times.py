"""Fill the README's measured times from the committed measurements (`--check`: exit 1 if stale).

    python tools/times.py [--check]

Two inline blocks, each between `<!-- NAME:start -->` and `<!-- NAME:end -->` on one line:
`times` (beside the two commands: the full `dvc repro` from docs/pipeline-speed.md, written by
bench/pipeline.py, and the study smokes from docs/times.md) and `realdata-time` (the real-data
recipe's small scale, docs/times.md, written by bench/times.py). Those two state CPU minutes: they
were measured on a machine other work shared, which stretches the wall time (kept beside them).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEED, TIMES, README = ROOT / "docs/pipeline-speed.md", ROOT / "docs/times.md", ROOT / "README.md"


def table(path: Path) -> list[list[str]]:
    """The rows of a generated markdown table (header and rule left out)."""
    if not path.is_file():
        return []
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in path.read_text().splitlines()
            if line.startswith("|")]
    return [r for r in rows[2:] if r]


def cores(path: Path) -> str:
    found = re.search(r"(\d+) cores", path.read_text()) if path.is_file() else None
    return found.group(1) if found else "?"


def times_block(speed: Path = SPEED, times: Path = TIMES) -> str:
    full = next((r for r in table(speed) if r[0].startswith("full dvc repro")), None)
    parts = [f"`dvc repro` {float(full[1]) / 60:.1f} min on {cores(speed)} cores (`docs/pipeline-speed.md`)"] if full else []
    smokes = sorted((float(r[3]), r[0].split()[1].rstrip(",")) for r in table(times) if r[0].endswith(", smoke"))
    if len(smokes) == 1:  # CPU minutes: the load stretches the wall time
        parts.append(f"the `{smokes[0][1]}` study's smoke {smokes[0][0]:.1f} CPU-min (`docs/times.md`)")
    elif smokes:
        parts.append(f"a study's smoke {smokes[0][0]:.1f}-{smokes[-1][0]:.1f} CPU-min ({len(smokes)} studies, `docs/times.md`)")
    return "; ".join(parts) or "not measured yet (`python bench/pipeline.py`, `python bench/times.py`)"


def realdata_block(times: Path = TIMES) -> str:
    row = next((r for r in table(times) if r[0].startswith("real-data recipe")), None)
    if row is None:
        return "not measured yet (`python bench/times.py realdata`)"
    what, _, wall, cpu, result, n, load = row
    return f"{cpu} CPU-min ({wall} min wall on {n} cores at load {load}; {result}; `docs/times.md`)"


def render(readme: str, blocks: dict[str, str]) -> str:
    for name, body in blocks.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end))
        if not pattern.search(readme):
            raise ValueError(f"README.md has no {start} ... {end} on one line")
        readme = pattern.sub(lambda _, b=body, s=start, e=end: f"{s}{b}{e}", readme)
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    current = README.read_text()
    try:
        text = render(current, {"times": times_block(), "realdata-time": realdata_block()})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return 0 if text == current else 1
    README.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
