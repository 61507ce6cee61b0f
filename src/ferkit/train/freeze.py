"""Which parameters learn in a training phase: the head, the last N blocks of the backbone, or everything.

Definitions (transfer learning, seeds 000, 003, 004):

- **head**: the layers a FER model adds on top of a backbone and that a pretrained file never provides — timm's
  classifier (``model.get_classifier()``: ``fc``, ``classifier``, ``head.fc``), seed 000's custom head
  (``BackboneWithHead.head``), or the ``head`` / ``classifier`` / ``fc`` attribute of ferkit's own networks.
- **blocks**: the backbone's parameters in forward order, grouped by the model's ``group_matcher(coarse=False)``
  — timm's own grouping, the one its layer-wise learning-rate decay uses: the stem, then one group per residual /
  inverted-residual / dense layer (ResNet18: stem + 8 BasicBlocks; MobileNetV2: stem + 17 blocks, the last
  holding the 1x1 conv head; DenseNet121: stem + 58 dense layers and transitions). Parameters the matcher leaves
  unmatched (a final norm such as DenseNet's ``norm5``) join the last block. ferkit's FerVGG, small CNN and
  ResMaskNet define ``group_matcher`` the same way (conv stages; residual-masking stages). Anything else falls
  back to the backbone's top-level child modules.

``last_n: N`` trains the head plus the last N blocks. Seed 000 unfroze "the last 56 layers" of Keras' MobileNetV2,
Keras counting every conv, BN and activation as a layer: that is about the last 6 inverted-residual blocks here.

Frozen parameters get ``requires_grad = False`` and stay out of the optimiser; BatchNorm layers whose parameters
are all frozen run in eval mode, so their running statistics stay those of the backbone (what Keras does for a
layer with ``trainable = False``). A frozen phase therefore leaves every frozen weight *and* buffer bit-identical.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from ferkit.train.config import ConfigError, PhaseConfig


def head_module(model: nn.Module) -> nn.Module:
    """The model's new classification head (see module docstring); raises ValueError if it cannot be found."""
    if hasattr(model, "backbone") and isinstance(getattr(model, "head", None), nn.Module):
        return model.head  # BackboneWithHead (seed 000 head)
    if hasattr(model, "get_classifier"):
        clf = model.get_classifier()
        if isinstance(clf, nn.Module) and any(True for _ in clf.parameters()):
            return clf
    for name in ("head", "classifier", "fc"):
        mod = getattr(model, name, None)
        if isinstance(mod, nn.Module) and any(True for _ in mod.parameters()):
            return mod
    raise ValueError(f"{type(model).__name__}: no classification head found (expected get_classifier(), or a "
                     "head / classifier / fc module), so train: head / last_n cannot be used with it")


def _prefix_of(model: nn.Module, module: nn.Module) -> str:
    for name, mod in model.named_modules():
        if mod is module:
            return name
    raise ValueError("module is not part of the model")


def _matcher_patterns(matcher: dict) -> list[re.Pattern]:
    pats: list[re.Pattern] = []
    for spec in matcher.values():
        if spec is None:
            continue
        if isinstance(spec, (list, tuple)):
            pats += [re.compile(s[0]) for s in spec]
        else:
            pats.append(re.compile(spec))
    return pats


def head_and_blocks(model: nn.Module) -> tuple[list[str], list[list[str]]]:
    """Parameter names of the head, and of the backbone's blocks in forward order (each a non-empty list)."""
    from timm.models import group_parameters

    head_prefix = _prefix_of(model, head_module(model))
    head = [n for n, _ in model.named_parameters() if n == head_prefix or n.startswith(head_prefix + ".")]
    head_set = set(head)
    backbone = getattr(model, "backbone", model)
    bb_prefix = _prefix_of(model, backbone)
    bb_prefix = bb_prefix + "." if bb_prefix else ""
    matcher = getattr(backbone, "group_matcher", None)
    blocks: list[list[str]] = []
    if callable(matcher):
        spec: dict | Callable = matcher(coarse=False)
        groups = group_parameters(backbone, spec)
        unmatched: set[str] = set()
        if isinstance(spec, dict):
            pats = _matcher_patterns(spec)
            unmatched = {n for n, _ in backbone.named_parameters() if not any(p.match(n) for p in pats)}
        leftovers: list[str] = []
        for gid in sorted(groups):
            names = [bb_prefix + n for n in groups[gid] if bb_prefix + n not in head_set]
            matched = [n for n in names if n[len(bb_prefix):] not in unmatched]
            leftovers += [n for n in names if n[len(bb_prefix):] in unmatched]
            if matched:
                blocks.append(matched)
        if leftovers:
            if blocks:
                blocks[-1] += leftovers
            else:
                blocks.append(leftovers)
    else:
        for name, child in backbone.named_children():
            names = [f"{bb_prefix}{name}.{n}" for n, _ in child.named_parameters()]
            names = [n for n in names if n not in head_set]
            if names:
                blocks.append(names)
    covered = head_set.union(*map(set, blocks)) if blocks else head_set
    rest = [n for n, _ in model.named_parameters() if n not in covered]
    if rest:  # parameters outside both (e.g. an autoencoder's decoder): count them as one more early block
        blocks.insert(0, rest)
    return head, blocks


def trainable_names(model: nn.Module, phase: PhaseConfig) -> set[str]:
    """Names of the parameters that learn in ``phase``."""
    if phase.train == "all":
        return {n for n, _ in model.named_parameters()}
    head, blocks = head_and_blocks(model)
    names = set(head)
    if phase.train == "last_n":
        if phase.last_n > len(blocks):
            raise ConfigError(f"phase asks for the last {phase.last_n} blocks but {type(model).__name__} has only "
                             f"{len(blocks)}; use train: all")
        for block in blocks[len(blocks) - phase.last_n:]:
            names.update(block)
    return names


def apply_phase(model: nn.Module, phase: PhaseConfig) -> list[nn.Parameter]:
    """Set ``requires_grad`` for ``phase``; returns the trainable parameters in model order (for the optimiser)."""
    names = trainable_names(model, phase)
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
        if n in names:
            params.append(p)
    return params


def freeze_batchnorm(model: nn.Module) -> None:
    """Put BatchNorm layers whose parameters are all frozen in eval mode (call after ``model.train()``)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters(recurse=False))
            if ps and not any(p.requires_grad for p in ps):
                m.eval()
