"""variants: resolve params.yaml into one config file per variant and stage.

Reads: params.yaml (the base sections prune, finetune, quantize, export, benchmark and `variants`),
sensitivity/sensitivity.json (per-layer measurements, for `allocation: sensitivity`).
Writes: configs/<variant>/{prune,finetune,quantize,export,benchmark}.json, each holding exactly
the sections that stage reads for that variant. Variant stages depend on these files, so an edit
re-runs only the variants (and stages) whose resolved settings changed.

It depends on the whole params file, so any edit runs it: a misspelt section (`prun:`) fails here at
once, and so does an export format this machine cannot build (TensorRT without a GPU). An edit that
changes no resolved setting rewrites the same bytes, and nothing downstream re-runs.
"""
import json
from pathlib import Path

from cnn_compress.core.config import read_params
from cnn_compress.core.errors import ConfigError, cli
from cnn_compress.core.stage import parse_args
from cnn_compress.variants.resolve import check_machine, resolve_all, variant_overrides, write_configs

SENSITIVITY = Path("sensitivity/sensitivity.json")


def read_table(path: Path) -> dict:
    try:
        table = json.loads(path.read_text())
    except ValueError:
        raise ConfigError(f"{path}: not valid JSON; re-run the sensitivity stage (dvc repro -f sensitivity)") from None
    if not isinstance(table, dict) or not isinstance(table.get("layers"), list):
        raise ConfigError(f"{path}: not a sensitivity table; re-run the sensitivity stage (dvc repro -f sensitivity)")
    return table


@cli
def main() -> None:
    parse_args(__doc__, variant=False)
    params = read_params()
    table = read_table(SENSITIVITY) if SENSITIVITY.is_file() else {"layers": []}
    resolved = resolve_all(params, table)
    check_machine(params, resolved)  # a TensorRT export without TensorRT fails here, before any variant runs
    write_configs(resolved)
    for name, over in variant_overrides(params).items():
        keys = [f"{s}.{k}" for s, section in over.items() for k in section]
        print(f"{name}: {', '.join(keys) if keys else 'the base sections'}")


if __name__ == "__main__":
    main()
