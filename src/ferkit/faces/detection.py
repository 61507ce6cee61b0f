"""The record every face detector returns.

Conventions (shared by all backends and by `ferkit.faces.crop`):

- ``box`` is ``(x, y, w, h)`` in **integer pixels of the original image** (not of any downscaled copy a detector
  worked on), clipped to the image: ``0 <= x``, ``0 <= y``, ``x + w <= width``, ``y + h <= height``, ``w, h >= 1``.
  Pixel ``(x, y)`` is the top-left pixel inside the box.
- ``landmarks`` maps a name to ``(x, y)`` as **floats** in original-image pixels (sub-pixel; pixel centres at integer
  coordinates, as in OpenCV). They are not clipped: a landmark may lie outside the box or, for a face cut by the
  frame, outside the image.
- **Left and right are the person's**, as in the iBUG/dlib and MediaPipe landmark schemes: ``"left_eye"`` is the
  person's left eye, which appears on the **right** side of the image in an upright, frontal photo. The person's
  frame survives rotation (an upside-down face still has its left eye labelled left), which is what alignment needs.
- Names used: ``left_eye``, ``right_eye`` (eye centres) wherever a backend can give them; ``nose`` (dlib: base of the
  nose; MediaPipe: nose tip), ``mouth`` (MediaPipe), ``left_ear``/``right_ear`` (MediaPipe tragion points).
- ``score`` is the backend's own confidence (dlib: HOG SVM margin, higher is surer, about -0.5..3; MediaPipe:
  probability 0..1) or ``None`` where the backend gives none (Haar). Scores are not comparable across backends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Point = tuple[float, float]


@dataclass
class Detection:
    """One face: ``box`` (x, y, w, h) in int pixels of the original image, ``score`` and named ``landmarks``."""

    box: tuple[int, int, int, int]
    score: float | None = None
    landmarks: dict[str, Point] = field(default_factory=dict)

    @property
    def eyes(self) -> tuple[Point, Point] | None:
        """``(left_eye, right_eye)`` (the person's left and right), or None when either is missing."""
        left, right = self.landmarks.get("left_eye"), self.landmarks.get("right_eye")
        if left is None or right is None:
            return None
        return left, right

    @property
    def area(self) -> int:
        return int(self.box[2]) * int(self.box[3])

    def shifted(self, dx: int, dy: int) -> Detection:
        """The same face in an image where this one's pixels start at ``(dx, dy)`` (a crop's face in its frame)."""
        x, y, w, h = self.box
        lms = {k: (p[0] + dx, p[1] + dy) for k, p in self.landmarks.items()}
        return Detection((x + dx, y + dy, w, h), self.score, lms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [int(v) for v in self.box],
            "score": None if self.score is None else float(self.score),
            "landmarks": {k: [float(v[0]), float(v[1])] for k, v in self.landmarks.items()},
        }


def make_detection(
    x0: float, y0: float, x1: float, y1: float, width: int, height: int, scale: float = 1.0,
    score: float | None = None, landmarks: dict[str, Point] | None = None,
) -> Detection | None:
    """Build a Detection from box edges ``x0, y0`` (inclusive) ``x1, y1`` (exclusive) and pixel-centre landmarks
    found on a copy of the image scaled by ``scale`` (work size = original size * scale).

    Maps coordinates back to the original image, rounds the box to ints, clips it to ``width`` x ``height``; returns
    None when nothing of the box is left inside the image.
    """
    inv = 1.0 / scale
    x0, y0, x1, y1 = x0 * inv, y0 * inv, x1 * inv, y1 * inv
    ix0, iy0 = max(0, int(round(x0))), max(0, int(round(y0)))
    ix1, iy1 = min(width, int(round(x1))), min(height, int(round(y1)))
    if ix1 - ix0 < 1 or iy1 - iy0 < 1:
        return None
    # box corners are pixel edges (scale directly); landmarks are pixel-centre coordinates
    lms = {k: ((float(p[0]) + 0.5) * inv - 0.5, (float(p[1]) + 0.5) * inv - 0.5) for k, p in (landmarks or {}).items()}
    return Detection((ix0, iy0, ix1 - ix0, iy1 - iy0), None if score is None else float(score), lms)
