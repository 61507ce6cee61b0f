"""Emotion label spaces, name aliases, groupings and mapping of probabilities between spaces.

Labels travel by *name* everywhere in ferkit. Datasets and models disagree on order (FER2013 puts angry first,
FER+ puts neutral first, AffectNet has contempt), and label-order mistakes are the most common silent bug in FER
code, so every vector of scores is keyed by name, and every conversion goes through this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ferkit.errors import UserInputError

FER2013_7: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The FER2013 class order (the csv's ``emotion`` column 0..6)."""

FERPLUS_8: tuple[str, ...] = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")
"""The FER+ vote-column order, in ferkit's canonical names."""

BASIC_8: tuple[str, ...] = FER2013_7 + ("contempt",)
"""FER2013's seven plus contempt (the AffectNet/FER+ 8-class space), in FER2013 order."""

BASIC_6: tuple[str, ...] = ("angry", "fear", "happy", "sad", "surprise", "neutral")
"""Seed 003's six classes: the eight without disgust and contempt (the two rarest, most confused classes)."""

VALENCE_3: tuple[str, ...] = ("positive", "neutral", "negative")

GROUP_OF: dict[str, str] = {
    "happy": "positive",
    "neutral": "neutral",
    "surprise": "neutral",
    "angry": "negative",
    "contempt": "negative",
    "disgust": "negative",
    "fear": "negative",
    "sad": "negative",
}
"""Seed 003's three-way grouping: positive = happy; neutral = neutral, surprise; negative = the rest."""

SPACES: dict[str, tuple[str, ...]] = {
    "fer2013": FER2013_7,
    "7": FER2013_7,
    "ferplus": FERPLUS_8,
    "8": BASIC_8,
    "6": BASIC_6,
    "3": VALENCE_3,
}

_ALIASES: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "neutrality": "neutral",
    "calm": "neutral",
    "contempt": "contempt",
    "contemptuous": "contempt",
    "positive": "positive",
    "negative": "negative",
}


class UnknownLabelError(UserInputError):
    """A label name that no alias maps to a known emotion."""


def canonical(name: str) -> str:
    """Return ferkit's canonical name for an emotion label (case-free, aliases resolved).

    >>> canonical("Happiness")
    'happy'
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    try:
        return _ALIASES[key]
    except KeyError:
        raise UnknownLabelError(f"unknown emotion label {name!r}; known: {sorted(set(_ALIASES.values()))}") from None


def try_canonical(name: str) -> str | None:
    """Like :func:`canonical` but returns None for names that are not emotions (e.g. FER+ 'unknown', 'NF')."""
    try:
        return canonical(name)
    except UnknownLabelError:
        return None


def space(name_or_labels: str | Sequence[str]) -> tuple[str, ...]:
    """Resolve a label space given by name ('fer2013', '8', '6', '3', ...) or as an explicit list of labels."""
    if isinstance(name_or_labels, str):
        try:
            return SPACES[name_or_labels.lower()]
        except KeyError:
            raise UnknownLabelError(f"unknown label space {name_or_labels!r}; known: {sorted(SPACES)}") from None
    return tuple(canonical(n) for n in name_or_labels)


def group_of(label: str) -> str:
    """The positive/neutral/negative group of an emotion."""
    return GROUP_OF[canonical(label)]


@dataclass(frozen=True)
class Grouping:
    """A target space and how source labels fall into it (None = the label is dropped)."""

    name: str
    labels: tuple[str, ...]

    def target_of(self, label: str) -> str | None:
        label = canonical(label)
        if self.labels == VALENCE_3:
            return GROUP_OF[label]
        return label if label in self.labels else None


GROUPINGS: dict[str, Grouping] = {
    "7": Grouping("7", FER2013_7),
    "8": Grouping("8", BASIC_8),
    "6": Grouping("6", BASIC_6),
    "3": Grouping("3", VALENCE_3),
}


def grouping(name: str) -> Grouping:
    try:
        return GROUPINGS[str(name)]
    except KeyError:
        raise UnknownLabelError(f"unknown grouping {name!r}; choose one of {sorted(GROUPINGS)}") from None


def map_probs(probs: np.ndarray | Sequence[float], source: Sequence[str], target: str | Sequence[str] | Grouping,
              renormalise: bool = True) -> np.ndarray:
    """Probabilities in the label order ``source`` -> the label space ``target``, by name: the ONE way scores move
    between label spaces in ferkit (evaluation groupings, ensembles of members with other label sets, distillation
    targets, a face's positive/neutral/negative scores).

    ``probs`` is (N, len(source)) or one row (len(source),); the result has the same rank with len(target) columns.
    Probabilities of source labels that fall into the same target label are summed (e.g. angry+disgust+fear+sad ->
    negative). Source labels with no place in the target (disgust in the 6-class space) are dropped and, with
    ``renormalise``, each row is rescaled to sum to 1 (a row left with nothing becomes uniform). Target labels the
    source lacks get 0.
    """
    g = target if isinstance(target, Grouping) else Grouping("custom", space(target))
    p = np.asarray(probs, dtype=np.float64)
    rows = p.reshape(1, -1) if p.ndim == 1 else p
    if rows.shape[1] != len(source):
        raise ValueError(f"probabilities have {rows.shape[1]} columns but {len(source)} source labels")
    to = np.zeros((len(source), len(g.labels)))
    column = {lab: i for i, lab in enumerate(g.labels)}
    for j, label in enumerate(source):
        t = g.target_of(label)
        if t is not None:
            to[j, column[t]] = 1.0
    out = rows @ to
    if renormalise:
        sums = out.sum(axis=1, keepdims=True)
        out = np.divide(out, sums, out=np.full_like(out, 1.0 / out.shape[1]), where=sums > 0)
    return out[0] if p.ndim == 1 else out


def argmax_label(scores: Mapping[str, float]) -> str:
    """The label with the highest score (first in order on ties)."""
    return max(scores, key=lambda k: scores[k])


def index_map(labels: Iterable[str]) -> dict[str, int]:
    """Name -> position within one model's or dataset's label order (the only place indices are made)."""
    return {canonical(n): i for i, n in enumerate(labels)}
