"""The lecture view (seed 000): the audience as a whole, per second and per minute, and the session's low and high
moments. It keeps no identities: in aggregate-only mode (the default) nothing per person is computed or written.

What it is for: a speaker reviewing a recorded talk or online lecture with consenting participants, to see when the
room's expressions changed. What it is not for: judging individuals, grading, or any use in an education
institution in the EU, where the AI Act (Art. 5(1)(f)) bans inferring emotions of people in education institutions
except for medical or safety reasons. Facial expressions are not feelings, and the model is wrong on about 3 in 10
faces (docs/VIDEO.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ferkit.video.results import GROUPS


def minutes(seconds: list[dict[str, Any]], labels: list[str]) -> list[dict[str, Any]]:
    """Per-minute rows from per-second rows: mean faces in view, and shares weighted by face-frames."""
    out = []
    by_minute: dict[int, list[dict[str, Any]]] = {}
    for r in seconds:
        by_minute.setdefault(r["second"] // 60, []).append(r)
    for minute, rows in sorted(by_minute.items()):
        faces = np.array([r["faces"] for r in rows], np.float64)
        w = faces * np.array([r["frames"] for r in rows], np.float64)
        row: dict[str, Any] = {"minute": minute, "faces": round(float(faces.mean()), 3),
                               "max_faces": round(float(faces.max()), 3)}
        for k in list(GROUPS) + labels:
            row[k] = round(float(np.dot(w, [r[k] for r in rows]) / w.sum()), 4) if w.sum() else 0.0
        out.append(row)
    return out


def moments(seconds: list[dict[str, Any]], window_s: int = 10, count: int = 3) -> list[dict[str, Any]]:
    """The ``count`` lowest and highest moments: windows of ``window_s`` seconds ranked by the mean of
    (positive share - negative share) over the seconds with faces in view; windows of a kind do not overlap."""
    rows = [r for r in seconds if r["faces"] > 0]
    if not rows:
        return []
    secs = np.array([r["second"] for r in rows])
    order = np.argsort(secs, kind="stable")
    secs = secs[order]
    valence = np.array([r["positive"] - r["negative"] for r in rows])[order]
    # each window's mean from running sums: linear in the video's length (the summaries recompute it every 5 s)
    total = np.concatenate([[0.0], np.cumsum(valence)])
    starts = np.unique(secs)
    first, end = np.searchsorted(secs, starts), np.searchsorted(secs, starts + window_s)
    scored = list(zip(((total[end] - total[first]) / (end - first)).tolist(), starts.tolist()))
    out = []
    for kind, ordered in (("low", sorted(scored)), ("high", sorted(scored, reverse=True))):
        taken: list[int] = []
        for value, start in ordered:
            if len(taken) == count:
                break
            if all(abs(start - t) >= window_s for t in taken):
                taken.append(start)
                out.append({"kind": kind, "start_s": start, "end_s": start + window_s, "valence": round(value, 4)})
    return out
