"""What a study's results may claim: the published claims checked on our rows, and which model the
rows are of.

A study's ``shape_checks`` returns :class:`Check` objects. Only ``published`` checks are counted in the
finding ("N of M published claims hold"): each tests one claim of ``shared/studies/<study>.yaml`` (its
``claims:`` entry, numbered from 1, and the table it rests on) with the published threshold or one
fixed in this module, which says where it comes from; none is loosened to make a check pass. ``ours`` checks state the project's own expectations and
``sanity`` checks are true by construction (a dense file does not shrink when zeros are written into
it): both are listed apart and never counted. A published claim that our rows cannot test (another
model, a GPU, a missing row) is ``untestable`` and not counted either.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["published", "ours", "sanity"]

# Thresholds for claims that give no figure of their own (each consistent with every published figure):
SAME_POINTS = 1.0  # "keeps accuracy" / "changes little": within 1 point (the published such changes: 0.00-0.69)
# ... so a claimed rise or fall of accuracy must exceed it (``beyond``), except where the published margin
# is itself smaller (global iterative pruning's 0.47 points over one-shot): there the order alone is tested
LATENCY_SAME = 0.10  # "barely moves": within 10% (the published such changes: 2.1-5.7%)
CHANCE_PCT = 15.0  # "collapses to chance" (10 classes): at most 15% top-1


@dataclass(frozen=True)
class Check:
    """One claim tested on our rows: ``result`` None means untestable (``why`` says why)."""

    key: str
    cites: str  # one line: what the claim says, with the published figures, the table id and claim number
    kind: Kind = "published"
    result: bool | None = None
    why: str = ""

    @property
    def shown(self) -> str:
        return "untestable" if self.result is None else ("yes" if self.result else "no")

    @property
    def label(self) -> str:
        return self.key.replace("_", " ")


def beyond(higher: Any, lower: Any) -> Any:
    """``higher`` above ``lower`` by more than SAME_POINTS: a rise or fall that is not "unchanged"."""
    return higher - lower > SAME_POINTS


def claim(key: str, cites: str, result: Any, why: str = "") -> Check:
    """A published claim tested on our rows (counted)."""
    return Check(key, cites, "published", None if result is None else bool(result), why)


def own(key: str, cites: str, result: Any) -> Check:
    """The project's own expectation (listed apart, never counted)."""
    return Check(key, cites, "ours", None if result is None else bool(result))


def sanity(key: str, cites: str, result: Any, why: str) -> Check:
    """True by construction (listed apart, never counted); ``why`` says why."""
    return Check(key, cites, "sanity", None if result is None else bool(result), why)


def untestable(key: str, cites: str, why: str) -> Check:
    """A published claim our rows cannot test (not counted)."""
    return Check(key, cites, "published", None, why)


def tested(checks: list[Check]) -> list[Check]:
    """The published claims our rows could test: the only ones a finding counts."""
    return [c for c in checks if c.kind == "published" and c.result is not None]


def count_line(checks: list[Check]) -> str:
    """The finding's end: "N of M published claims hold; contradicted: a, b"."""
    counted = tested(checks)
    held = sum(bool(c.result) for c in counted)
    no = [c.label for c in counted if not c.result]
    return f"{held} of {len(counted)} published claims hold" + (f"; contradicted: {', '.join(no)}" if no else "")


def as_metrics(checks: list[Check]) -> dict[str, Any]:
    """Every testable check by key (published, ours and sanity alike) and the published count."""
    counted = tested(checks)
    return {**{c.key: c.result for c in checks if c.result is not None},
            "published_claims_hold": sum(bool(c.result) for c in counted), "published_claims_tested": len(counted)}


def section(checks: list[Check], study: str) -> list[str]:
    """results.md's part: the counted claims, then what is not counted (and why)."""
    counted = [c for c in checks if c.kind == "published" and c.result is not None]
    out = ["## Published claims, checked on our rows\n",
           f"Each line tests one claim of `shared/studies/{study}.yaml` (`claim N`: its N-th `claims:` entry) on our "
           "rows, with the published threshold or one stated in `studies/checks.py` (never loosened after a result); "
           f"the finding counts these: {count_line(checks)}.\n",
           "\n".join(f"- {c.label}: **{c.shown}** - {c.cites}" for c in counted) or "- none could be tested", ""]
    rest = [c for c in checks if c not in counted]
    if rest:
        out += ["### Not counted\n", "Published claims these rows cannot test, the project's own expectations "
                "(`ours`) and checks true by construction (`sanity`).\n",
                "\n".join(f"- {c.label} ({c.kind}): **{c.shown}** - {c.cites}{'. ' + c.why if c.why else ''}"
                          for c in rest), ""]
    return out


# the model a study folder runs, by name (``model.arch`` in its params)
NAMES = {"resnet18": "ResNet-18", "resnet18_imagenet": "ResNet-18", "mobilenet_v2": "MobileNetV2",
         "mobilenet_v2_imagenet": "MobileNetV2", "vgg16_bn": "VGG16-BN", "vgg16_bn_imagenet": "VGG16-BN"}


def model_name(model: dict[str, Any] | None) -> str:
    """``resnet56`` -> ResNet-56; a CIFAR ResNet of another width says so; an unknown arch is shown as is."""
    arch = str((model or {}).get("arch", "?"))
    depth = re.fullmatch(r"resnet(\d+)", arch)
    name = f"ResNet-{depth.group(1)}" if depth else NAMES.get(arch, arch)
    width = (model or {}).get("width")
    return f"{name} (width {width})" if depth and width not in (None, 16) else name


def model_label(params: dict[str, Any], published_model: str) -> str:
    """"ResNet-56 standing in for ResNet-18" when the folder runs another model than the published one."""
    run = model_name(params.get("model"))
    return run if run == published_model else f"{run} standing in for {published_model}"
