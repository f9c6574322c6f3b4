"""Pruning methods, one handler per ``prune.method`` in a registry, each one-shot or iterative.

``l1_unstructured`` zeroes the smallest-magnitude conv and linear weights, with one global
threshold or the same ratio per layer; the masks are made permanent (plain zeros in a plain
tensor), so the pruned checkpoint loads like any other and fine-tuning recovers the masks from
the zeros. ``structured`` removes whole channels with torch-pruning's dependency graph, so the
saved model is smaller and faster; its checkpoint records the new shapes and loads without
torch-pruning. ``blocks`` removes whole residual blocks (depth pruning): ``ratio`` of the
removable ones, those whose removal alone raises the held-out loss least; fewer layers pay at
batch 1, where thinner layers barely do (per-layer overhead dominates small CNNs).

CIFAR ResNets with "option A" shortcuts pad channels with zeros in a parameter-free op that the
dependency graph does not follow: pruning a residual channel there leaves a model that no longer
runs. For such models only the block-internal channels (each block's first conv) are pruned.
"""
from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from cnn_compress.core.errors import ConfigError
from cnn_compress.core.registry import Registry
from cnn_compress.models.blocks import RemovedBlock, removable_blocks, set_module
from cnn_compress.models.zoo import BasicBlock, PadShortcut
from cnn_compress.prune.config import PruneConfig

PRUNABLE = (nn.Conv2d, nn.Linear)
AfterStep = Callable[[nn.Module, int], None]  # called after pruning step k (1-based): train here


@dataclass
class PruneContext:
    example: torch.Tensor  # normalised, class-balanced images: the graph is traced on them, Taylor scores too
    labels: torch.Tensor
    head: str | tuple[str, ...]  # the classifier's module name(s): their outputs are the classes, never pruned
    held_out: tuple[torch.Tensor, torch.Tensor] | None = None  # normalised validation images + labels
    probe: bool = False  # your own model: try each channel group on a copy first, keep whole those that break it

    @classmethod
    def random(cls, head: str, shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10) -> PruneContext:
        gen = torch.Generator().manual_seed(0)
        return cls(torch.randn(8, *shape, generator=gen), torch.arange(8) % num_classes, head)


Pruner = Callable[[nn.Module, PruneConfig, PruneContext, "AfterStep | None"], nn.Module]
PRUNERS: Registry[Pruner] = Registry("prune.method", "method")


def register_pruner(name: str) -> Callable[[Pruner], Pruner]:
    return PRUNERS.register(name)


def pruner_names() -> list[str]:
    return PRUNERS.names()


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]


def prune_model(
    model: nn.Module, cfg: PruneConfig, ctx: PruneContext | None = None, after_step: AfterStep | None = None
) -> nn.Module:
    """Prune ``model`` with ``cfg.method`` to ``cfg.ratio`` in ``cfg.steps`` steps; returns it."""
    pruner = PRUNERS.get(cfg.method)
    if cfg.ratio == 0 and not cfg.layer_ratios:
        return model
    return pruner(model, cfg, ctx or PruneContext.random("linear"), after_step)


@register_pruner("l1_unstructured")
def l1_unstructured(model: nn.Module, cfg: PruneConfig, ctx: PruneContext, after_step: AfterStep | None) -> nn.Module:
    """The classifier is pruned like any layer (the published unstructured studies do); ``prune.ignore``
    leaves layers out."""
    left_out = _matching(prunable_layers(model), cfg.ignore)
    layers = [(n, m) for n, m in prunable_layers(model) if n not in left_out]
    if unknown := sorted(set(cfg.layer_ratios) - {n for n, _ in layers}):
        raise ConfigError(f"prune.layer_ratios: {unknown[0]!r} names no conv or linear layer of this model")
    for k in range(1, cfg.steps + 1):
        amount = cfg.ratio * k / cfg.steps  # zeros rank lowest, so earlier steps' zeros stay zero
        if cfg.layer_ratios:  # per-layer ratios (allocation: sensitivity): each layer on its own schedule
            for name, m in layers:
                torch_prune.l1_unstructured(m, "weight", amount=cfg.layer_ratios.get(name, 0.0) * k / cfg.steps)
        elif cfg.scope == "global":
            torch_prune.global_unstructured(
                [(m, "weight") for _, m in layers], pruning_method=torch_prune.L1Unstructured, amount=amount
            )
        else:
            for _, m in layers:
                torch_prune.l1_unstructured(m, "weight", amount=amount)
        for _, m in layers:
            torch_prune.remove(m, "weight")  # make the mask permanent: zeros in a plain parameter
        if after_step:
            after_step(model, k)
    return model


def prune_int8_program(program: Any, cfg: PruneConfig) -> int:
    """Zero the smallest INT8 weights of a PT2E program in place (``prune.order: after_quantize``).

    The weights are the int8 tensors feeding ``dequantize_per_channel``; a weight's magnitude is
    ``|q - zero_point| * scale`` of its channel, ranked globally or per layer like ``l1_unstructured``,
    and a pruned code is set to the zero-point, so it dequantizes to exactly 0. Returns how many
    weights were zeroed.
    """
    sig = program.graph_signature
    names = {**sig.inputs_to_buffers, **sig.inputs_to_parameters, **sig.inputs_to_lifted_tensor_constants}

    def tensor(node: Any) -> torch.Tensor:
        name = names[node.name]
        return program.state_dict[name] if name in program.state_dict else program.constants[name]

    layers = []
    for node in program.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.quantized_decomposed.dequantize_per_channel.default:
            q = tensor(node.args[0])
            if q.dtype == torch.int8:
                shape = [1] * q.dim()
                shape[node.args[3]] = -1
                zero = tensor(node.args[2]).view(shape).to(torch.int32)
                layers.append((q, zero, (q.to(torch.int32) - zero).abs() * tensor(node.args[1]).view(shape)))
    groups = [layers] if cfg.scope == "global" else [[layer] for layer in layers]
    zeroed = 0
    for group in groups:
        mags = torch.cat([m.flatten() for _, _, m in group])
        mask = torch.zeros(len(mags), dtype=torch.bool)
        mask[torch.argsort(mags, stable=True)[: round(cfg.ratio * len(mags))]] = True
        for (q, zero, _), m in zip(group, mask.split([g[2].numel() for g in group]), strict=True):
            m = m.view(q.shape)
            q.copy_(torch.where(m, zero.expand(q.shape).to(torch.int8), q))
            zeroed += int(m.sum())
    return zeroed


def structured_policy(model: nn.Module) -> str:
    """``block-internal`` for option-A CIFAR ResNets (see the module docstring), else ``all``."""
    return "block-internal" if any(isinstance(m, PadShortcut) for m in model.modules()) else "all"


def _matching(layers: list[tuple[str, nn.Module]], prefixes: tuple[str, ...]) -> set[str]:
    """The layer names under each prefix (a module name); one that matches nothing is a typo."""
    ignored = set()
    for prefix in prefixes:
        hits = {n for n, _ in layers if n == prefix or n.startswith(f"{prefix}.")}
        if not hits:
            raise ConfigError(f"prune.ignore: {prefix!r} names no conv or linear layer")
        ignored |= hits
    return ignored


def _ignored_layers(model: nn.Module, cfg: PruneConfig, head: str | tuple[str, ...]) -> list[nn.Module]:
    names = dict(prunable_layers(model))
    ignored = _matching(prunable_layers(model), ((head,) if isinstance(head, str) else head) + cfg.ignore)
    if structured_policy(model) == "block-internal":
        internal = {f"{n}.conv1" for n, m in model.named_modules() if isinstance(m, BasicBlock)}
        ignored |= set(names) - internal
    return [names[n] for n in sorted(ignored)]


def _importance(name: str) -> Any:
    import torch_pruning as tp

    return {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "bn_scale": lambda: tp.importance.BNScaleImportance(),
    }[name]()


@register_pruner("structured")
def structured(model: nn.Module, cfg: PruneConfig, ctx: PruneContext, after_step: AfterStep | None) -> nn.Module:
    """Channel pruning through torch-pruning's ``BasePruner`` (its iterative steps drive the schedule)."""
    import torch_pruning as tp

    model.eval()  # tracing must not move BatchNorm statistics
    with torch.no_grad():
        classes = model(ctx.example[:1]).shape[-1]
    ignored = _ignored_layers(model, cfg, ctx.head)
    breaking = breaking_groups(model, ctx.example[:1], ignored) if ctx.probe else []
    ignored += [model.get_submodule(n) for n in breaking]

    pruner = tp.pruner.BasePruner(
        model, ctx.example[:1], importance=_importance(cfg.importance), global_pruning=cfg.scope == "global",
        pruning_ratio=cfg.ratio, max_pruning_ratio=cfg.max_layer_ratio, iterative_steps=cfg.steps,
        ignored_layers=ignored, round_to=cfg.round_to if cfg.round_to > 1 else None,
    )
    if whole := breaking + left_whole(pruner, model, ignored):  # your own model's odd layers: say so, keep them
        print(f"note: prune: torch-pruning cannot remove channels of {len(whole)} layer(s), left whole: "
              f"{', '.join(whole)}", file=sys.stderr)
    for k in range(1, cfg.steps + 1):
        model.eval()
        if cfg.importance == "taylor":
            model.zero_grad()
            F.cross_entropy(model(ctx.example), ctx.labels).backward()
        pruner.step()
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            if (now := model.eval()(ctx.example[:1]).shape[-1]) != classes:
                raise ConfigError(f"prune: structured pruning took the model's outputs from {classes} to {now}: "
                                  "name the classifier layers in prune.ignore")
        if after_step:
            after_step(model, k)
    return model


def breaking_groups(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module]) -> list[str]:
    """Root layers of the channel groups whose pruning leaves a model that no longer runs (an op
    torch-pruning follows wrongly, e.g. a layer's output added to the input image): each group is
    pruned alone, by half, on a copy of the model, which then has to run."""
    import torch_pruning as tp

    names = {id(m): n for n, m in model.named_modules()}
    skip = [n for n in map(names.get, map(id, ignored)) if n is not None]

    def groups(m: nn.Module) -> Any:
        pruner = tp.pruner.BasePruner(m, example, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                      pruning_ratio=0.5, ignored_layers=[m.get_submodule(n) for n in skip])
        return pruner.step(interactive=True)

    def root(m: nn.Module, group: Any) -> str:
        return {id(x): n for n, x in m.named_modules()}[id(group[0].dep.target.module)]

    roots = [root(model_copy, g) for model_copy in [copy.deepcopy(model)] for g in groups(model_copy)]
    bad = []
    for name in roots:
        trial = copy.deepcopy(model)
        try:
            for group in groups(trial):
                if root(trial, group) == name:
                    group.prune()
                    break
            with torch.no_grad():
                trial.eval()(example)
        except Exception:  # whatever breaks: this group stays whole
            bad.append(name)
    return bad


def left_whole(pruner: Any, model: nn.Module, ignored: list[nn.Module]) -> list[str]:
    """Conv / linear layers outside ``ignored`` whose output channels belong to no prunable group of
    torch-pruning's dependency graph (an op it cannot follow, or tied to an ignored layer)."""
    graph, reached = pruner.DG, set()
    for group in graph.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types):
        reached |= {dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)}
    skip = set(map(id, ignored))
    return [n for n, m in prunable_layers(model) if id(m) not in skip and m not in reached]


@register_pruner("blocks")
def blocks(model: nn.Module, cfg: PruneConfig, ctx: PruneContext, after_step: AfterStep | None) -> nn.Module:
    """Depth pruning: each step re-measures every remaining block alone, then removes the cheapest."""
    candidates = [n for n in removable_blocks(model) if not _matching_block(n, cfg.ignore)]
    if not candidates:
        raise ConfigError(f"prune.method: blocks: this model has no removable residual block "
                          f"(one whose shortcut is the identity){' outside prune.ignore' if cfg.ignore else ''}; "
                          "in your own model, mark such a block's class with residual_identity = True "
                          "(docs/own-model.md)")
    target = int(cfg.ratio * len(candidates) + 0.5)  # half up: ratio 0.5 of one block removes it
    images, labels = ctx.held_out or (ctx.example, ctx.labels)
    removed = 0
    for k in range(1, cfg.steps + 1):
        goal = int(target * k / cfg.steps + 0.5)
        left = [n for n in candidates if not isinstance(model.get_submodule(n), RemovedBlock)]
        for name in sorted(left, key=lambda n: _loss_without(model, n, images, labels))[: goal - removed]:
            set_module(model, name, RemovedBlock())
        removed = goal
        if after_step:
            after_step(model, k)
    return model


def _matching_block(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in prefixes)


@torch.no_grad()
def _loss_without(model: nn.Module, name: str, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Held-out cross-entropy with block ``name`` removed (put back afterwards)."""
    was_training = model.training
    model.eval()
    block = set_module(model, name, RemovedBlock())
    try:
        loss = sum(float(F.cross_entropy(model(images[i:i + 256]), labels[i:i + 256], reduction="sum"))
                   for i in range(0, len(images), 256)) / max(len(images), 1)
    finally:
        set_module(model, name, block)
        model.train(was_training)
    return loss


def pruned_ratio(history: list[dict[str, Any]]) -> float:
    """The ratio the last prune step in a checkpoint's history used (0 if never pruned)."""
    return next((float(h["config"].get("ratio", 0.0)) for h in reversed(history) if h.get("stage") == "prune"), 0.0)


def sparsity_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks (1 = kept) of every prunable weight that has zeros, keyed by parameter name."""
    masks = {}
    for name, m in prunable_layers(model):
        mask = (m.weight != 0).to(m.weight.dtype)
        if not bool(mask.all()):
            masks[f"{name}.weight" if name else "weight"] = mask
    return masks


def layer_sparsity(model: nn.Module) -> list[dict[str, Any]]:
    """Per-layer weight counts and sparsity (percent) of the prunable layers."""
    rows = []
    for name, m in prunable_layers(model):
        n = m.weight.numel()
        zeros = n - int(torch.count_nonzero(m.weight))
        rows.append({"layer": name, "params": n, "zeros": zeros, "sparsity": round(100.0 * zeros / n, 4)})
    return rows


def global_sparsity(model: nn.Module) -> float:
    rows = layer_sparsity(model)
    total = sum(r["params"] for r in rows)
    return round(100.0 * sum(r["zeros"] for r in rows) / max(total, 1), 4)
