"""variants: resolve params.yaml into one config file per variant and stage.

Reads: params.yaml (the base sections prune, finetune, quantize, export, benchmark and `variants`).
Writes: configs/<variant>/{prune,finetune,quantize,export,benchmark}.json, each holding exactly
the sections that stage reads for that variant. Variant stages depend on these files, so an edit
re-runs only the variants (and stages) whose resolved settings changed.
"""
from cnn_compress.core.config import read_params
from cnn_compress.core.errors import cli
from cnn_compress.core.stage import parse_args
from cnn_compress.variants.resolve import resolve_all, variant_overrides, write_configs


@cli
def main() -> None:
    parse_args(__doc__, variant=False)
    params = read_params()
    resolved = resolve_all(params)
    write_configs(resolved)
    for name, over in variant_overrides(params).items():
        keys = [f"{s}.{k}" for s, section in over.items() for k in section]
        print(f"{name}: {', '.join(keys) if keys else 'the base sections'}")


if __name__ == "__main__":
    main()
