"""Model packages: an ONNX graph plus a JSON card that says how to feed it and where it came from.

The card is the contract between training and run time: labels in output order (by name), input size and channels,
normalisation, the face-crop policy the model was trained with, provenance (data, recipe, command, commit) and
metrics with the command that measured them. A package is a folder ``<name>/`` holding ``model.onnx`` and
``card.json``; the shipped ones live in ``ferkit/weights/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ferkit.io import atomic_write
from ferkit.labels import canonical
from ferkit.errors import UserInputError

CARD_NAME = "card.json"
GRAPH_NAME = "model.onnx"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class PackageError(UserInputError):
    """A model package that is missing, incomplete or inconsistent."""


@dataclass
class ModelCard:
    name: str
    labels: list[str]
    input_size: int = 48
    channels: int = 1
    mean: float = 0.5
    std: float = 0.5
    crop_policy: str = "margin"
    crop_margin: float = 0.2
    align: bool = True
    clahe: bool = False
    """CLAHE on every crop after resizing to ``input_size`` (the model was trained on CLAHE'd images, seed 003)."""
    architecture: str = ""
    parameters: int = 0
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    ferkit_version: str = ""

    def __post_init__(self) -> None:
        self.labels = [canonical(lab) for lab in self.labels]
        if len(set(self.labels)) != len(self.labels):
            raise PackageError(f"model card {self.name!r}: duplicate labels {self.labels}")
        if self.channels not in (1, 3):
            raise PackageError(f"model card {self.name!r}: channels must be 1 or 3, not {self.channels}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelCard:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


def write_card(folder: str | os.PathLike, card: ModelCard) -> Path:
    """Write ``card.json`` atomically (a crash never leaves a half-written card beside a graph)."""
    return atomic_write(Path(folder) / CARD_NAME, lambda tmp: tmp.write_text(card.to_json()))


def read_card(folder: str | os.PathLike) -> ModelCard:
    path = Path(folder) / CARD_NAME
    try:
        return ModelCard.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise PackageError(f"{folder}: not a model package (no {CARD_NAME})") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise PackageError(f"{path}: unreadable model card ({exc})") from None


def shipped_models() -> list[str]:
    """Names of the packages shipped inside ferkit (``--model NAME``)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / CARD_NAME).is_file())


def resolve_package(model: str | os.PathLike) -> Path:
    """A package folder from a shipped name ('default') or a path (folder, or its model.onnx)."""
    p = Path(model)
    if p.is_file() and p.suffix == ".onnx":
        p = p.parent
    if p.is_dir():
        folder = p
    elif (WEIGHTS_DIR / str(model)).is_dir():
        folder = WEIGHTS_DIR / str(model)
    else:
        raise PackageError(f"model {str(model)!r} is neither a package folder nor a shipped model "
                           f"(shipped: {', '.join(shipped_models()) or 'none'})")
    if not (folder / GRAPH_NAME).is_file():
        raise PackageError(f"{folder}: model package has no {GRAPH_NAME}")
    return folder
