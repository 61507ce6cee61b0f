"""The records every dataset reader produces, and the decoding step that turns them into images.

Readers only *list* entries (cheap, no decoding); :func:`decode` opens them, so one corrupt file among 35,000 is a
:class:`Problem` in a list rather than a crash, and statistics over labels never pay for decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ferkit.io import ImageError, read_image

SPLITS = ("Training", "PublicTest", "PrivateTest")
"""FER2013's official usages: PrivateTest is the standard test set, PublicTest the validation set."""

_SPLIT_ALIASES = {
    "training": "Training",
    "train": "Training",
    "publictest": "PublicTest",
    "public": "PublicTest",
    "val": "PublicTest",
    "valid": "PublicTest",
    "validation": "PublicTest",
    "privatetest": "PrivateTest",
    "private": "PrivateTest",
    "test": "PrivateTest",
}


def canonical_split(name: str) -> str:
    """Map split names users type ('train', 'val', 'test', 'PrivateTest', ...) onto FER2013's usages.

    'test' means PrivateTest, the standard FER2013 test set; a folder named test/ that holds both PublicTest_ and
    PrivateTest_ files is split by file name before this mapping is ever consulted.
    """
    key = name.strip().lower().replace("_", "").replace("-", "")
    try:
        return _SPLIT_ALIASES[key]
    except KeyError:
        raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)} (or train/val/test)") from None


@dataclass
class Entry:
    """One labelled image, not yet decoded. ``pixels`` is set for csv datasets that carry the image inline."""

    source: str
    label: str | None
    split: str | None = None
    votes: dict[str, float] | None = None
    pixels: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Sample:
    """A decoded entry: ``image`` is uint8, HxW (gray) or HxWx3 (rgb)."""

    image: np.ndarray
    label: str | None
    split: str | None
    source: str
    votes: dict[str, float] | None = None


@dataclass(frozen=True)
class Problem:
    """An input that was skipped, with the one-line reason."""

    source: str
    reason: str


def decode(entries: Iterable[Entry], mode: str = "gray", problems: list[Problem] | None = None,
           on_problem: Callable[[Problem], None] | None = None) -> Iterator[Sample]:
    """Decode entries to samples, skipping (and reporting) unreadable ones instead of raising."""
    for e in entries:
        try:
            image = _pixels_to_mode(e.pixels, mode) if e.pixels is not None else read_image(e.source, mode)
        except ImageError as exc:
            problem = Problem(e.source, str(exc))
            if problems is not None:
                problems.append(problem)
            if on_problem is not None:
                on_problem(problem)
            continue
        yield Sample(image, e.label, e.split, e.source, e.votes)


def _pixels_to_mode(pixels: np.ndarray, mode: str) -> np.ndarray:
    if mode == "gray":
        return pixels
    return np.repeat(pixels[..., None], 3, axis=-1)
