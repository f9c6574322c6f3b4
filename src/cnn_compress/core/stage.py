"""Stage plumbing: where a variant's files live, and a command line that answers ``--help``."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

PREPARED = Path("data/prepared")
BASELINE = Path("models/baseline.pt")


@dataclass(frozen=True)
class VariantPaths:
    """Every path of one variant: its resolved configs, artifacts, details and metrics."""

    name: str

    def config(self, stage: str) -> Path:
        return Path("configs") / self.name / f"{stage}.json"

    @property
    def root(self) -> Path:
        return Path("variants") / self.name

    @property
    def pruned(self) -> Path:
        return self.root / "pruned.pt"

    @property
    def finetuned(self) -> Path:
        return self.root / "finetuned.pt"

    @property
    def quantized(self) -> Path:
        return self.root / "quantized"

    @property
    def exported(self) -> Path:
        return self.root / "exported"

    @property
    def compressed(self) -> Path:
        return self.root / "compressed"

    @property
    def metrics(self) -> Path:
        """One small JSON per artifact: the key figures ``dvc metrics show`` lists."""
        return Path("metrics") / self.name


def parse_args(doc: str, variant: bool = True, argv: list[str] | None = None, study: bool = False) -> argparse.Namespace:
    """The stage's command line: ``doc`` (the script's docstring: what it reads and writes) is the
    ``--help`` text; variant stages take the variant's name, as dvc.yaml's foreach passes it."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if variant:
        parser.add_argument("variant", help="the variant's name (a key of `variants` in params.yaml)")
    if study:
        parser.add_argument("study", help="the study's name (a key of `study` in params.yaml)")
    return parser.parse_args(argv)


def variant_paths(doc: str, argv: list[str] | None = None) -> VariantPaths:
    return VariantPaths(parse_args(doc, argv=argv).variant)
