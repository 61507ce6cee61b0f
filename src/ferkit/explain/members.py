"""What an explanation runs: the torch model of each package it explains, with its weight and Grad-CAM layer.

A plain package is one member of weight 1; an ensemble package (card ``"kind": "ensemble"``, members copied under
``members/<name>/``, see docs/DESIGN.md) gives one member per entry of its card, with the card's weight. Each
member keeps its own card, so members with different crops, input sizes or channels are each fed as trained.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ferkit.packages import (
    CARD_NAME,
    ModelCard,
    card_kind,
    member_folder,
    read_card,
    read_ensemble_card,
    resolve_folder,
    resolve_package,
)


@dataclass
class Member:
    name: str
    folder: Path
    weight: float
    model: object
    """The torch model (eval mode, fp32)."""
    card: ModelCard
    target_layer: object
    """Its Grad-CAM target layer (the architecture's, from the registry)."""


def package_folders(model: str | os.PathLike) -> tuple[str, list[tuple[str, Path, float]]]:
    """``(name, [(member name, package folder, weight), ...])`` for a package or an ensemble package (read with
    :func:`ferkit.packages.read_ensemble_card`; whatever its ``method``, its members' CAMs are averaged with the
    card's weights)."""
    folder = resolve_folder(model)
    if (folder / CARD_NAME).is_file() and card_kind(folder) == "ensemble":
        card = read_ensemble_card(folder)
        return card.name, [(m.name, resolve_package(member_folder(folder, m)), m.weight) for m in card.members]
    resolved = resolve_package(model)
    name = read_card(resolved).name
    return name, [(name, resolved, 1.0)]


def load_members(model: str | os.PathLike) -> tuple[str, list[Member]]:
    """The name of ``model`` and its members' torch models (needs the ``explain`` extra)."""
    from ferkit.models import cam_layer
    from ferkit.models.from_package import load_package_model

    name, folders = package_folders(model)
    members = []
    for member_name, folder, weight in folders:
        net, card = load_package_model(folder)
        members.append(Member(member_name, folder, weight, net, card, cam_layer(card.arch, net)))
    return name, members


def torch_model(package: str | os.PathLike):
    """The torch model (fp32, eval mode) of a model package, built from its card's architecture with its
    ``weights.safetensors``; one MissingExtraError line when torch is not installed."""
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        from ferkit.errors import missing_extra

        raise missing_extra("explain", "the torch model of a package (ferkit.explain.torch_model)") from None
    from ferkit.models.from_package import load_package_model

    return load_package_model(package)[0]
