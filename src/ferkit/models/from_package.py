"""The torch model of a model package: its card's architecture, built from the registry, with the package's
``weights.safetensors`` loaded (the torch side of a package; :mod:`ferkit.packages` stays torch-free).

Why packages carry torch weights at all: ONNX Runtime answers "which emotion" without torch, but Grad-CAM and
class visualisation need gradients through the network, so ``ferkit export`` writes the fp32 state_dict beside the
graph and the card names the architecture with its arguments (``{"arch": ..., "args": {...}}``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ferkit.errors import FerkitError
from ferkit.io import atomic_write
from ferkit.models.registry import build_model
from ferkit.packages import TORCH_WEIGHTS_NAME, ModelCard, PackageError, read_card, resolve_package


def build_for_card(card: ModelCard) -> nn.Module:
    """The card's architecture, untrained, for its labels, channels and input size (eval mode)."""
    if not card.arch:
        raise PackageError(f"model card {card.name!r} names no architecture, so its torch model cannot be built; "
                           f"re-export the package with `ferkit export`")
    try:
        model = build_model(card.arch, num_classes=len(card.labels), in_chans=card.channels,
                            input_size=card.input_size, **card.architecture["args"])
    except FerkitError as exc:
        raise PackageError(f"model card {card.name!r}: {exc}") from None
    return model.eval()


def save_torch_weights(model: nn.Module, folder: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``model``'s state_dict to ``folder/weights.safetensors`` (floating tensors as ``dtype``), atomically."""
    state = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
             for k, v in model.state_dict().items()}
    return atomic_write(Path(folder) / TORCH_WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp)))


def load_package_model(package: str | os.PathLike) -> tuple[nn.Module, ModelCard]:
    """``(model, card)``: the package's torch model in fp32 and eval mode, with its weights loaded.

    One PackageError line for a package without ``weights.safetensors`` (exported before packages carried them),
    an unreadable weights file, or weights that do not fit the card's architecture.
    """
    folder = resolve_package(package)
    card = read_card(folder)
    path = folder / TORCH_WEIGHTS_NAME
    if not path.is_file():
        raise PackageError(f"{folder}: no {TORCH_WEIGHTS_NAME} (the torch weights that explanations need); "
                           f"re-export the package with `ferkit export`")
    model = build_for_card(card)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise PackageError(f"{path}: unreadable torch weights, truncated or corrupt ({exc})") from None
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        first = str(exc).splitlines()[0].rstrip(":. ")
        raise PackageError(f"{path}: these weights do not fit the card's architecture {card.arch} ({first})") from None
    return model.float().eval(), card
