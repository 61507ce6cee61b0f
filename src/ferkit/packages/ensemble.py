"""Ensemble packages: a card that lists member model packages, their weights and how their scores combine.

Format (the contract the explain command reads too): a folder with ``card.json`` holding ``"kind": "ensemble"``,
``name``, ``labels`` (the union of the members' labels by name, in BASIC_8 order, then any others in the order
members list them), ``method`` (vote | average | rank | accuracy | manual), ``members`` (``[{"name", "path":
"members/<name>", "weight"}]``, weights summing to 1) and optional ``selection`` (how the members were chosen, with
the validation accuracy-vs-k curve) and ``metrics``. Each member is a full model package copied under
``members/<name>/``, so the ensemble folder is self-contained: copy it anywhere and it loads.

Torch-free and cheap: reading a card opens no ONNX graph (members are checked when the ensemble loads).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ferkit.io import atomic_write
from ferkit.labels import BASIC_8, canonical
from ferkit.packages.package import CARD_NAME, PackageError, read_raw_card

METHODS = ("vote", "average", "rank", "accuracy", "manual")
MEMBERS_DIR = "members"


@dataclass
class Member:
    name: str
    path: str
    """Relative to the ensemble folder (``members/<name>``)."""
    weight: float


@dataclass
class EnsembleCard:
    name: str
    labels: list[str]
    method: str
    members: list[Member]
    kind: str = "ensemble"
    selection: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    """How it was built: the command, the ferkit version and commit."""
    calibration: dict[str, Any] | None = None
    """Fitted by `ferkit calibrate` (ferkit.calibration), applied to the combined probabilities."""

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, indent=2) + "\n"


def union_labels(label_sets: list[list[str]]) -> list[str]:
    """The members' labels by name, each once: BASIC_8 order first, then the others in the order first seen."""
    seen = {canonical(lab) for labels in label_sets for lab in labels}
    ordered = [lab for lab in BASIC_8 if lab in seen]
    for labels in label_sets:
        for lab in map(canonical, labels):
            if lab not in ordered:
                ordered.append(lab)
    return ordered


def read_ensemble_card(folder: str | os.PathLike) -> EnsembleCard:
    """The card of an ensemble folder, checked (one PackageError line per problem); members are not opened."""
    path = Path(folder) / CARD_NAME
    raw = read_raw_card(folder)
    if raw.get("kind") != "ensemble":
        raise PackageError(f"{path}: not an ensemble card (no \"kind\": \"ensemble\")")
    for key in ("name", "labels", "method", "members"):
        if key not in raw:
            raise PackageError(f"{path}: ensemble card has no {key!r}")
    if raw["method"] not in METHODS:
        raise PackageError(f"{path}: method {raw['method']!r} is not one of {', '.join(METHODS)}")
    if not isinstance(raw["members"], list) or not raw["members"]:
        raise PackageError(f"{path}: an ensemble lists at least one member")
    members = []
    for m in raw["members"]:
        if not isinstance(m, dict) or not {"name", "path", "weight"} <= set(m):
            raise PackageError(f"{path}: each member needs name, path and weight, not {m!r}")
        w = m["weight"]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise PackageError(f"{path}: member {m['name']!r} has weight {w!r}; weights are numbers >= 0")
        members.append(Member(str(m["name"]), str(m["path"]), float(w)))
    if sum(m.weight for m in members) <= 0:
        raise PackageError(f"{path}: the members' weights sum to 0")
    try:
        labels = [canonical(lab) for lab in raw["labels"]]
    except (TypeError, AttributeError):
        raise PackageError(f"{path}: labels must be a list of emotion names, not {raw['labels']!r}") from None
    known = set(EnsembleCard.__dataclass_fields__)
    extra = {k: v for k, v in raw.items() if k in known and k not in ("labels", "members", "kind")}
    return EnsembleCard(labels=labels, members=members, **extra)


def member_folder(folder: str | os.PathLike, member: Member) -> Path:
    """A member's package folder inside the ensemble; a missing one is one PackageError line."""
    where = Path(folder) / member.path
    if not (where / CARD_NAME).is_file():
        raise PackageError(f"{folder}: member {member.name!r} is missing ({where} has no {CARD_NAME}); copy the "
                           "whole ensemble folder, or rebuild it with `ferkit ensemble build`")
    return where


def write_ensemble_card(folder: str | os.PathLike, card: EnsembleCard) -> Path:
    """Write ``card.json`` atomically."""
    return atomic_write(Path(folder) / CARD_NAME, lambda tmp: tmp.write_text(card.to_json()))
