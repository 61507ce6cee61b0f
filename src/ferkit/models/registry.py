"""Architecture registry: a name -> a torch module for any input size, 1 or 3 channels and any label count.

Every architecture is built through :func:`build_model` so recipes, export and tests name models the same way.
Each entry declares the smallest input side it supports, so a recipe with ``size: 48`` for ``inception_v3`` fails
at build time with a clear message instead of deep inside a convolution (or, worse, silently convolving padding),
and its Grad-CAM target layer (:func:`cam_layer`), so explanations work for every architecture without knowing any.

Architecture modules register themselves (``register(name)(builder)``) and :mod:`ferkit.models`'s ``__init__``
imports them; this module never imports them back, so imports only flow one way (as in timm's ``_registry``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ferkit.errors import UserInputError

Builder = Callable[..., nn.Module]
CamLayer = Callable[[nn.Module], nn.Module]
"""A built model -> the module whose activations and gradients Grad-CAM weighs (a late convolutional stage)."""

_BUILDERS: dict[str, Builder] = {}
_MIN_INPUT: dict[str, int] = {}
_CAM_LAYERS: dict[str, CamLayer] = {}

BUILD_ARGS = ("num_classes", "in_chans", "input_size")
"""What :func:`build_model` itself passes to every builder; a recipe's ``model.args`` may not set them."""


def register(name: str, cam_layer: CamLayer, min_input: int = 1) -> Callable[[Builder], Builder]:
    """Register ``fn`` as ``name``; ``min_input`` is the smallest input side (pixels) the architecture supports and
    ``cam_layer`` picks its Grad-CAM target layer from a built model.

    Why a late stage whose stride is at most 16 rather than the very last one: faces reach these networks at
    48-64 px, where a stride-32 stage is a 1-2 px map and its CAM a single blob; the stage before it still sees
    the whole face and keeps where the eyes and mouth are.

    A second registration of the same name is a bug (two files claiming one name), so it raises.
    """
    def wrap(fn: Builder) -> Builder:
        if name in _BUILDERS:
            raise RuntimeError(f"architecture {name!r} is registered twice")
        _BUILDERS[name] = fn
        _MIN_INPUT[name] = min_input
        _CAM_LAYERS[name] = cam_layer
        return fn
    return wrap


def cam_layer(arch: str, model: nn.Module) -> nn.Module:
    """The Grad-CAM target layer of ``model``, an ``arch`` built by :func:`build_model`."""
    _builder(arch)
    return _CAM_LAYERS[arch](model)


def available() -> list[str]:
    return sorted(_BUILDERS)


def min_input_size(arch: str) -> int:
    """Smallest square input side ``arch`` accepts (see each module's docstring for why)."""
    _builder(arch)
    return _MIN_INPUT[arch]


def _builder(arch: str) -> Builder:
    try:
        return _BUILDERS[arch]
    except KeyError:
        raise UserInputError(f"unknown architecture {arch!r}; available: {', '.join(available())}") from None


def arch_args(arch: str) -> dict[str, Any]:
    """The arguments a recipe may give ``arch`` (``model.args``), with their defaults, from the builder's signature."""
    params = inspect.signature(_builder(arch)).parameters.values()
    return {p.name: p.default for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in BUILD_ARGS}


def check_args(arch: str, args: Mapping[str, Any]) -> None:
    """Raise UserInputError (one line, naming the allowed arguments) for an argument ``arch`` does not take."""
    allowed = arch_args(arch)
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise UserInputError(f"architecture {arch!r} takes no argument {', '.join(map(repr, unknown))}; "
                             f"its arguments: {', '.join(sorted(allowed)) or 'none'}")


def build_model(arch: str, num_classes: int, in_chans: int = 1, input_size: int = 48, **kwargs: Any) -> nn.Module:
    """Build ``arch`` with a ``num_classes``-way output for ``in_chans``-channel ``input_size`` squares."""
    builder = _builder(arch)
    check_args(arch, kwargs)
    if input_size < _MIN_INPUT[arch]:
        raise UserInputError(f"architecture {arch!r} needs input_size >= {_MIN_INPUT[arch]} px, got {input_size}")
    if num_classes < 1 or in_chans < 1:
        raise UserInputError(f"num_classes and in_chans must be positive, got {num_classes} and {in_chans}")
    return builder(num_classes=num_classes, in_chans=in_chans, input_size=input_size, **kwargs)
