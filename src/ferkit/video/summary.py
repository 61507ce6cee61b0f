"""Online summaries of a video as frames go by: per person and per second of the group, in memory that grows with
the number of people and seconds (a few numbers each), never with the number of frames.

Time on screen adds each frame's duration (``1 / fps`` for a file; the time since the previous frame for a live
source, which drops frames); shares are by the smoothed label, so one
flickering frame does not count as a change of expression.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ferkit.labels import GROUP_OF
from ferkit.video.results import GROUPS, FrameResult, PersonSummary


@dataclass
class _PersonStats:
    first_s: float
    last_s: float
    frames: int = 0
    seconds: float = 0.0
    label_frames: np.ndarray | None = None  # frames per smoothed label
    score_sum: np.ndarray | None = None
    lane: dict[int, np.ndarray] = field(default_factory=dict)  # second -> summed smoothed scores
    thumb_quality: float = -1.0
    thumbnail: np.ndarray | None = None


class PeopleSummary:
    """Per-person time on screen, label shares, per-second lane (for the timeline) and best thumbnail."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self._index = {k: i for i, k in enumerate(labels)}
        self._people: dict[int, _PersonStats] = {}

    def add(self, frame: FrameResult, dt: float, rgb: np.ndarray | None = None) -> None:
        n = len(self.labels)
        for f in frame.faces:
            if f.person is None:
                continue
            p = self._people.get(f.person)
            if p is None:
                p = self._people[f.person] = _PersonStats(frame.time_s, frame.time_s, label_frames=np.zeros(n),
                                                           score_sum=np.zeros(n))
            p.last_s = frame.time_s
            p.frames += 1
            p.seconds += dt
            p.label_frames[self._index[f.smoothed_emotion]] += 1
            p.score_sum += [f.scores[k] for k in self.labels]
            sec = int(frame.time_s)
            smoothed = np.array([f.smoothed[k] for k in self.labels])
            if sec in p.lane:
                p.lane[sec] += smoothed
            else:
                p.lane[sec] = smoothed
            if rgb is not None and f.detected:
                # the sharpest large, confident face makes the thumbnail: box area x detector certainty
                quality = f.box[2] * f.box[3] * (1.0 + max(f.detector_score or 0.0, 0.0))
                if quality > p.thumb_quality:
                    x, y, w, h = f.box
                    p.thumb_quality = quality
                    p.thumbnail = rgb[y:y + h, x:x + w].copy()

    @property
    def ids(self) -> list[int]:
        return sorted(self._people)

    def thumbnail(self, person: int) -> np.ndarray | None:
        return self._people[person].thumbnail

    def lanes(self) -> dict[int, dict[int, str]]:
        """person -> second -> the label with the highest smoothed score summed over that second."""
        return {pid: {s: self.labels[int(np.argmax(v))] for s, v in sorted(p.lane.items())}
                for pid, p in sorted(self._people.items())}

    def summaries(self, thumbnails: dict[int, str] | None = None) -> list[PersonSummary]:
        out = []
        for pid in self.ids:
            p = self._people[pid]
            shares = p.label_frames / max(p.frames, 1)
            emotion_shares = {k: float(shares[i]) for i, k in enumerate(self.labels)}
            group_shares = {g: 0.0 for g in GROUPS}
            for k, v in emotion_shares.items():
                group_shares[GROUP_OF[k]] += v
            out.append(PersonSummary(
                pid, p.first_s, p.last_s, p.seconds, self.labels[int(np.argmax(p.label_frames))],
                emotion_shares, group_shares,
                {k: float(p.score_sum[i] / max(p.frames, 1)) for i, k in enumerate(self.labels)},
                (thumbnails or {}).get(pid)))
        return out


class GroupSeconds:
    """The group per second of video: faces in view and the share of them per smoothed label and group.

    Shares are over face-frames within the second, so a second with three people for all of it and one more for
    half of it weighs each person by the time they were in view. A second is complete (``pop_complete``) once a
    frame of a later second has been added; sinks write it then.
    """

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self._open: dict[int, np.ndarray] = {}
        self._n = len(labels)
        self._index = {k: i for i, k in enumerate(labels)}
        self.rows: list[dict[str, Any]] = []

    def add(self, frame: FrameResult) -> list[dict[str, Any]]:
        """Add one frame; returns the rows of seconds completed by it."""
        sec = int(frame.time_s)
        done = [self._row(s) for s in sorted(self._open) if s < sec]
        acc = self._open.setdefault(sec, np.zeros(2 + self._n))
        acc[0] += 1  # frames
        acc[1] += len(frame.faces)
        for f in frame.faces:
            acc[2 + self._index[f.smoothed_emotion]] += 1
        return done

    def _row(self, sec: int) -> dict[str, Any]:
        acc = self._open.pop(sec)
        faces = acc[1]
        row: dict[str, Any] = {"second": sec, "frames": int(acc[0]), "faces": round(float(faces / max(acc[0], 1)), 3)}
        shares = {k: float(acc[2 + i] / faces) if faces else 0.0 for i, k in enumerate(self.labels)}
        for g in GROUPS:
            row[g] = round(sum(v for k, v in shares.items() if GROUP_OF[k] == g), 4)
        row.update({k: round(v, 4) for k, v in shares.items()})
        self.rows.append(row)
        return row

    def flush(self) -> list[dict[str, Any]]:
        """Close the seconds still open (at the end of the video)."""
        return [self._row(s) for s in sorted(self._open)]


def clip_result(seconds: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """Clip-level result: the shares over all face-frames of the clip (each second weighted by its face-frames)."""
    weights = np.array([r["faces"] * r["frames"] for r in seconds], np.float64)
    total = weights.sum()
    if not total:
        return {"faces_seen": False, "dominant_emotion": None, "group": None,
                "group_shares": {g: 0.0 for g in GROUPS}, "emotion_shares": {k: 0.0 for k in labels},
                "mean_faces_in_view": 0.0}
    emotion = {k: float(np.dot(weights, [r[k] for r in seconds]) / total) for k in labels}
    group = {g: float(np.dot(weights, [r[g] for r in seconds]) / total) for g in GROUPS}
    return {"faces_seen": True, "dominant_emotion": max(emotion, key=emotion.__getitem__),
            "group": max(group, key=group.__getitem__),
            "group_shares": {k: round(v, 4) for k, v in group.items()},
            "emotion_shares": {k: round(v, 4) for k, v in emotion.items()},
            "mean_faces_in_view": round(float(total / sum(r["frames"] for r in seconds)), 3)}
