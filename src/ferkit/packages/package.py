"""Model packages: an ONNX graph plus a JSON card that says how to feed it and where it came from.

The card is the contract between training and run time: labels in output order (by name), input size and channels,
normalisation, the face-crop policy the model was trained with, provenance (data, recipe, command, commit) and
metrics with the command that measured them. A package is a folder ``<name>/`` holding ``model.onnx`` and
``card.json`` and, optionally, ``weights.safetensors``: the torch state_dict of the architecture the card names
(``architecture: {"arch": ..., "args": {...}}``), which Grad-CAM and class visualisation need
(:func:`ferkit.packages.torch_model`); the shipped ones live in ``ferkit/weights/``.
"""

from __future__ import annotations

import ast
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ferkit.calibration import CalibrationError, validate as validate_calibration
from ferkit.io import atomic_write
from ferkit.labels import canonical
from ferkit.errors import UserInputError

CARD_NAME = "card.json"
KINDS = ("model", "ensemble")
GRAPH_NAME = "model.onnx"
TORCH_WEIGHTS_NAME = "weights.safetensors"
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
    architecture: dict[str, Any] = field(default_factory=dict)
    """``{"arch": <registered name>, "args": {<builder arguments>}}``: what builds the torch model of
    ``weights.safetensors``. Cards written before it was structured held a string (``"fervgg {'widths': ...}"``);
    it is parsed into this form when the card is read."""
    parameters: int = 0
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    """Fitted by `ferkit calibrate` (one fit per TTA mode) and applied by the runtime; empty: raw probabilities.
    Format: :mod:`ferkit.calibration`."""
    ferkit_version: str = ""

    def __post_init__(self) -> None:
        where = f"model card {self.name!r}"
        if not isinstance(self.labels, list) or not self.labels or not all(isinstance(x, str) for x in self.labels):
            raise PackageError(f"{where}: labels must be a non-empty list of emotion names, not {self.labels!r}")
        self.labels = [canonical(lab) for lab in self.labels]
        if len(set(self.labels)) != len(self.labels):
            raise PackageError(f"{where}: duplicate labels {self.labels}")
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise PackageError(f"{where}: channels must be 1 or 3, not {self.channels!r}")
        if not _is_int(self.input_size) or self.input_size < 1:
            raise PackageError(f"{where}: input_size must be a positive whole number of pixels, not {self.input_size!r}")
        for key in ("mean", "std", "crop_margin"):
            value = getattr(self, key)
            if not _is_number(value) or not math.isfinite(value):
                raise PackageError(f"{where}: {key} must be a number, not {value!r}")
        if self.std <= 0:
            raise PackageError(f"{where}: std must be > 0 (inputs are divided by it), not {self.std!r}")
        for key in ("align", "clahe"):
            if not isinstance(getattr(self, key), bool):
                raise PackageError(f"{where}: {key} must be true or false, not {getattr(self, key)!r}")
        try:
            validate_calibration(self.calibration, self.labels)
        except CalibrationError as exc:
            raise PackageError(f"{where}: {exc}") from None
        self.architecture = parse_architecture(self.architecture, where)

    @property
    def arch(self) -> str:
        """The architecture's registered name ('' when the card does not say)."""
        return self.architecture.get("arch", "")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelCard:
        """A card from parsed JSON; keys this ferkit does not know (written by a newer one) are ignored."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


def parse_architecture(value: Any, where: str = "model card") -> dict[str, Any]:
    """The card's architecture as ``{"arch": name, "args": {...}}``, from that form or the older string form
    (``"fervgg {'widths': [32, 96], 'hidden': 256}"`` or a bare ``"fervgg"``)."""
    if value in (None, "", {}):
        return {}
    if isinstance(value, str):
        name, _, args = value.strip().partition(" ")
        try:
            parsed = ast.literal_eval(args) if args.strip() else {}
        except (ValueError, SyntaxError):
            raise PackageError(f"{where}: unreadable architecture {value!r}; write it as "
                               '{"arch": NAME, "args": {...}}') from None
        value = {"arch": name, "args": parsed}
    if (not isinstance(value, dict) or not isinstance(value.get("arch"), str) or not value["arch"]
            or not isinstance(value.get("args", {}), dict)):
        raise PackageError(f"{where}: architecture must be {{\"arch\": NAME, \"args\": {{...}}}}, not {value!r}")
    return {"arch": value["arch"], "args": dict(value.get("args", {}))}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def write_card(folder: str | os.PathLike, card: ModelCard) -> Path:
    """Write ``card.json`` atomically (a crash never leaves a half-written card beside a graph)."""
    return atomic_write(Path(folder) / CARD_NAME, lambda tmp: tmp.write_text(card.to_json()))


def read_raw_card(folder: str | os.PathLike) -> dict[str, Any]:
    """A package's card.json as a dict (a model's or an ensemble's); PackageError (one line) when it is missing or
    unparsable."""
    path = Path(folder) / CARD_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise PackageError(f"{folder}: not a model package (no {CARD_NAME})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{path}: unreadable model card ({exc})") from None
    if not isinstance(raw, dict):
        raise PackageError(f"{path}: a model card is a JSON object (name, labels, input_size, ...), "
                           f"not a {type(raw).__name__}")
    return raw


def card_kind(folder: str | os.PathLike) -> str:
    """'model' (one ONNX graph) or 'ensemble' (members under members/): the card's ``kind``, 'model' when absent."""
    kind = read_raw_card(folder).get("kind", "model")
    if kind not in KINDS:
        raise PackageError(f"{Path(folder) / CARD_NAME}: unknown package kind {kind!r}; expected one of "
                           f"{', '.join(KINDS)}")
    return kind


def read_card(folder: str | os.PathLike) -> ModelCard:
    """The card of a model package; PackageError (one line) for a missing, unparsable or inconsistent card, or for
    an ensemble (read by :func:`ferkit.packages.ensemble.read_ensemble_card`)."""
    path = Path(folder) / CARD_NAME
    raw = read_raw_card(folder)
    if raw.get("kind", "model") != "model":
        raise PackageError(f"{folder}: a package of kind {raw.get('kind')!r}, not one model; load it with "
                           f"ferkit.classify.load_classifier (every command's --model accepts it)")
    missing = [k for k in ("name", "labels") if k not in raw]
    if missing:
        raise PackageError(f"{path}: model card has no {' or '.join(missing)}")
    try:
        return ModelCard.from_dict(raw)
    except PackageError as exc:
        raise PackageError(f"{path}: {exc}") from None


def shipped_models() -> list[str]:
    """Names of the packages shipped inside ferkit (``--model NAME``)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / CARD_NAME).is_file())


def resolve_folder(model: str | os.PathLike) -> Path:
    """A package folder (a model's or an ensemble's) from a shipped name ('default') or a path (a folder, or a
    model's model.onnx)."""
    p = Path(model)
    if p.is_file() and p.suffix == ".onnx":
        p = p.parent
    if p.is_dir():
        return p
    if (WEIGHTS_DIR / str(model)).is_dir():
        return WEIGHTS_DIR / str(model)
    raise PackageError(f"model {str(model)!r} is neither a package folder nor a shipped model "
                       f"(shipped: {', '.join(shipped_models()) or 'none'})")


def resolve_package(model: str | os.PathLike) -> Path:
    """The folder of one model package (see :func:`resolve_folder`), which must hold its ONNX graph."""
    folder = resolve_folder(model)
    if not (folder / GRAPH_NAME).is_file():
        if (folder / CARD_NAME).is_file() and card_kind(folder) != "model":
            read_card(folder)  # says it is an ensemble and how to load it
        raise PackageError(f"{folder}: model package has no {GRAPH_NAME}")
    return folder
