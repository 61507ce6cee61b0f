"""Architecture registry: a name -> a torch module for any input size, 1 or 3 channels and any label count.

Every architecture is built through :func:`build_model` so recipes, export and tests name models the same way.
Each entry declares the smallest input side it supports, so a recipe with ``size: 48`` for ``inception_v3`` fails
at build time with a clear message instead of deep inside a convolution (or, worse, silently convolving padding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ferkit.models.vgg import FerVGG

Builder = Callable[..., nn.Module]

_BUILDERS: dict[str, Builder] = {}
_MIN_INPUT: dict[str, int] = {}


def register(name: str, min_input: int = 1) -> Callable[[Builder], Builder]:
    """Register ``fn`` as ``name``; ``min_input`` is the smallest input side (pixels) the architecture supports."""
    def wrap(fn: Builder) -> Builder:
        _BUILDERS[name] = fn
        _MIN_INPUT[name] = min_input
        return fn
    return wrap


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
        raise ValueError(f"unknown architecture {arch!r}; available: {', '.join(available())}") from None


def build_model(arch: str, num_classes: int, in_chans: int = 1, input_size: int = 48, **kwargs: Any) -> nn.Module:
    """Build ``arch`` with a ``num_classes``-way output for ``in_chans``-channel ``input_size`` squares."""
    builder = _builder(arch)
    if input_size < _MIN_INPUT[arch]:
        raise ValueError(f"architecture {arch!r} needs input_size >= {_MIN_INPUT[arch]} px, got {input_size}")
    if num_classes < 1 or in_chans < 1:
        raise ValueError(f"num_classes and in_chans must be positive, got {num_classes} and {in_chans}")
    return builder(num_classes=num_classes, in_chans=in_chans, input_size=input_size, **kwargs)


@register("fervgg", min_input=16)
def _fervgg(**kwargs: Any) -> nn.Module:
    return FerVGG(**kwargs)


# Modules that register themselves on import (kept last: they import ``register`` from this module).
from ferkit.models import autoencoder, resmasknet, small_cnn, timm_zoo  # noqa: E402,F401
