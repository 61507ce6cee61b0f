"""Architecture registry: a name -> a torch module for any input size, 1 or 3 channels and any label count.

Every architecture is built through :func:`build_model` so recipes, export and tests name models the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ferkit.models.vgg import FerVGG

Builder = Callable[..., nn.Module]

_BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def wrap(fn: Builder) -> Builder:
        _BUILDERS[name] = fn
        return fn
    return wrap


def available() -> list[str]:
    return sorted(_BUILDERS)


def build_model(arch: str, num_classes: int, in_chans: int = 1, input_size: int = 48, **kwargs: Any) -> nn.Module:
    """Build ``arch`` with a ``num_classes``-way output for ``in_chans``-channel ``input_size`` squares."""
    try:
        builder = _BUILDERS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; available: {', '.join(available())}") from None
    return builder(num_classes=num_classes, in_chans=in_chans, input_size=input_size, **kwargs)


@register("fervgg")
def _fervgg(**kwargs: Any) -> nn.Module:
    return FerVGG(**kwargs)
