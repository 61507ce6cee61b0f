"""Typed results of a video: a face in a frame (with its person id and smoothed scores), a frame, a person's
summary and the whole video's summary (``VideoResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ferkit.labels import GROUP_OF
from ferkit.results import Face

GROUPS = ("positive", "neutral", "negative")


@dataclass
class PersonFace(Face):
    """A face in a video frame: ``Face`` plus the person it belongs to (None in aggregate-only mode, which keeps no
    identities), its smoothed scores and whether the box came from a detection (else from the tracker)."""

    person: int | None = None
    smoothed: dict[str, float] = field(default_factory=dict)
    detected: bool = True

    @property
    def smoothed_emotion(self) -> str:
        s = self.smoothed or self.scores
        return max(s, key=s.__getitem__)

    @property
    def smoothed_group(self) -> str:
        return GROUP_OF[self.smoothed_emotion]


@dataclass
class FrameResult:
    """All faces in one frame; ``detected`` says whether face detection ran on it (else boxes are the tracker's)."""

    index: int
    time_s: float
    faces: list[PersonFace]
    detected: bool

    def rows(self, labels: list[str]) -> list[dict[str, Any]]:
        """The frames.csv layout: one row per face."""
        out = []
        for f in self.faces:
            x, y, w, h = f.box
            row: dict[str, Any] = {
                "frame": self.index, "time_s": round(self.time_s, 3), "person": f.person, "x": x, "y": y, "w": w,
                "h": h, "detected": int(f.detected), "emotion": f.emotion, "confidence": round(f.confidence, 4),
                "group": f.group, "smoothed_emotion": f.smoothed_emotion, "smoothed_group": f.smoothed_group}
            row.update({k: round(float(f.scores[k]), 5) for k in labels})
            out.append(row)
        return out


FRAME_COLUMNS = ["frame", "time_s", "person", "x", "y", "w", "h", "detected", "emotion", "confidence", "group",
                 "smoothed_emotion", "smoothed_group"]


@dataclass
class PersonSummary:
    """One person over the whole video. Shares are fractions of the person's time on screen, by smoothed label."""

    person: int
    first_s: float
    last_s: float
    seconds: float
    dominant_emotion: str
    emotion_shares: dict[str, float]
    group_shares: dict[str, float]
    mean_scores: dict[str, float]
    thumbnail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"person": self.person, "first_s": round(self.first_s, 3), "last_s": round(self.last_s, 3),
                "seconds": round(self.seconds, 3), "dominant_emotion": self.dominant_emotion,
                "emotion_shares": {k: round(v, 4) for k, v in self.emotion_shares.items()},
                "group_shares": {k: round(v, 4) for k, v in self.group_shares.items()},
                "mean_scores": {k: round(v, 4) for k, v in self.mean_scores.items()},
                "thumbnail": self.thumbnail}

    def row(self) -> dict[str, Any]:
        d = self.to_dict()
        row = {k: d[k] for k in ("person", "first_s", "last_s", "seconds", "dominant_emotion")}
        row.update({f"share_{k}": v for k, v in d["group_shares"].items()})
        row.update({f"share_{k}": v for k, v in d["emotion_shares"].items()})
        row["thumbnail"] = self.thumbnail or ""
        return row


@dataclass
class VideoResult:
    """A whole video: per-person summaries, the group's shares per second, the clip-level result and settings.

    ``people`` is empty in aggregate-only mode. ``seconds`` has one dict per second of video with people in view
    (``second``, ``faces`` = mean faces in view, ``positive``/``neutral``/``negative`` and per-emotion shares of
    the faces in view). ``clip`` holds the clip-level shares and dominant emotion. ``error`` is set when the video
    could not be read to its end (the rest is what was read).
    """

    source: str
    fps: float
    frames: int
    duration_s: float
    labels: list[str]
    people: list[PersonSummary]
    seconds: list[dict[str, Any]]
    clip: dict[str, Any]
    settings: dict[str, Any]
    minutes: list[dict[str, Any]] = field(default_factory=list)
    moments: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"source": self.source, "fps": round(self.fps, 3), "frames": self.frames,
               "duration_s": round(self.duration_s, 3), "labels": self.labels, "clip": self.clip,
               "people": [p.to_dict() for p in self.people], "settings": self.settings}
        if self.moments:
            out["moments"] = self.moments
        if self.error:
            out["error"] = self.error
        return out

    def to_dataframe(self):
        """One row per person (pandas): seconds on screen, dominant emotion, shares."""
        import pandas as pd

        return pd.DataFrame([p.row() for p in self.people])

    def seconds_dataframe(self):
        """One row per second of video: faces in view and the group's shares."""
        import pandas as pd

        return pd.DataFrame(self.seconds)
