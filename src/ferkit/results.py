"""Typed results of analysis (Face, ImageResult) and their conversions: dict/JSON, CSV rows, pandas.

The JSON shape is the public contract of ../shared/DESIGN.md: a face has ``box`` [x, y, w, h] in original-image
pixels, ``landmarks``, ``scores`` (emotion -> probability, summing to 1), ``emotion``, ``confidence`` and ``group``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ferkit.labels import GROUP_OF, VALENCE_3, map_probs


@dataclass
class Face:
    box: tuple[int, int, int, int]
    scores: dict[str, float]
    landmarks: dict[str, tuple[float, float]] = field(default_factory=dict)
    detector_score: float | None = None

    @property
    def emotion(self) -> str:
        return max(self.scores, key=self.scores.__getitem__)

    @property
    def confidence(self) -> float:
        return self.scores[self.emotion]

    @property
    def group(self) -> str:
        """positive / neutral / negative: the group of the top emotion, so a face shown as 'happy' is positive.

        ``group_scores`` has the summed probability of each group (what `evaluate --grouping 3` scores by).
        """
        return GROUP_OF[self.emotion]

    @property
    def group_scores(self) -> dict[str, float]:
        return dict(zip(VALENCE_3, map(float, map_probs(list(self.scores.values()), list(self.scores), "3"))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [int(v) for v in self.box],
            "landmarks": {k: [round(float(x), 1), round(float(y), 1)] for k, (x, y) in self.landmarks.items()},
            "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
            "emotion": self.emotion,
            "confidence": round(float(self.confidence), 6),
            "group": self.group,
            "detector_score": None if self.detector_score is None else round(float(self.detector_score), 4),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Face:
        return cls(tuple(d["box"]), dict(d["scores"]), {k: tuple(v) for k, v in d.get("landmarks", {}).items()},
                   d.get("detector_score"))


@dataclass
class ImageResult:
    """All faces of one image (an empty list when there is none: that is a result, not an error)."""

    source: str
    width: int
    height: int
    faces: list[Face]
    model: str = ""
    detector: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"source": self.source, "width": self.width, "height": self.height, "model": self.model,
               "detector": self.detector, "faces": [f.to_dict() for f in self.faces]}
        if self.error:
            out["error"] = self.error
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageResult:
        return cls(d["source"], d["width"], d["height"], [Face.from_dict(f) for f in d["faces"]],
                   d.get("model", ""), d.get("detector", ""), d.get("error"))

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per face (the CSV and DataFrame layout)."""
        out = []
        for i, f in enumerate(self.faces):
            x, y, w, h = f.box
            row: dict[str, Any] = {"source": self.source, "face": i, "x": x, "y": y, "w": w, "h": h,
                                   "emotion": f.emotion, "confidence": round(f.confidence, 6), "group": f.group}
            row.update({k: round(v, 6) for k, v in f.scores.items()})
            out.append(row)
        return out

    def to_dataframe(self):
        return to_dataframe([self])


def to_dataframe(results: list[ImageResult]):
    """A pandas DataFrame with one row per face (pandas is imported only here: it is optional)."""
    import pandas as pd

    return pd.DataFrame([row for r in results for row in r.rows()])


CSV_BASE_COLUMNS = ["source", "face", "x", "y", "w", "h", "emotion", "confidence", "group"]
GROUPS = tuple(dict.fromkeys(GROUP_OF.values()))
