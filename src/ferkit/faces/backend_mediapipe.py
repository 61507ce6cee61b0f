"""MediaPipe BlazeFace (legacy "solutions" API, whose models ship inside the wheel: no download at run time).

Optional: ``pip install 'ferkit[mediapipe]'`` installs ``mediapipe==0.10.21``, which **pins numpy<2** (and pulls
jax, jaxlib, opencv-contrib-python and matplotlib, ~1 GB in all). Install it in an environment of its own if the
rest of your stack needs numpy 2; ferkit's code works with numpy 1.26 and 2.x.

Models: ``model="full"`` (default; full-range model, faces up to ~5 m, better for group photos) or ``"short"``
(short-range, faces within ~2 m, i.e. selfies and portraits). Keypoints: MediaPipe's RIGHT_EYE/LEFT_EYE are the
person's right/left, the same convention as ferkit's Detection.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ferkit.errors import missing_extra
from ferkit.faces.registry import Detector, DetectorUnavailable, register_detector

_KEYPOINTS = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")


class MediaPipeDetector(Detector):
    """MediaPipe BlazeFace. min_confidence: drop detections below this score (MediaPipe's default 0.5)."""

    name = "mediapipe"

    def __init__(self, model: str = "full", min_confidence: float = 0.5, max_side: int | None = 1024) -> None:
        if model not in ("full", "short"):
            raise ValueError(f"MediaPipe model must be 'full' or 'short', not {model!r}")
        try:
            from mediapipe.python.solutions import face_detection
        except (ImportError, AttributeError, RuntimeError, OSError) as exc:  # missing, or built against another numpy
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc) else type(exc).__name__
            raise DetectorUnavailable(f"{missing_extra('mediapipe', 'detector mediapipe')}; mediapipe==0.10.21 "
                                      f"pins numpy<2 [{reason}]") from None
        self.model = model
        self.name = "mediapipe" if model == "full" else "mediapipe_short"
        self.max_side = max_side
        self.min_confidence = min_confidence
        self._fd = face_detection.FaceDetection(min_detection_confidence=min_confidence,
                                                model_selection=1 if model == "full" else 0)

    def __repr__(self) -> str:
        return (f"MediaPipeDetector(model={self.model!r}, min_confidence={self.min_confidence}, "
                f"max_side={self.max_side})")

    def close(self) -> None:
        self._fd.close()

    def _detect(self, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        result = self._fd.process(rgb)
        out = []
        for det in result.detections or []:
            loc = det.location_data
            bb = loc.relative_bounding_box
            x0, y0 = bb.xmin * w, bb.ymin * h
            x1, y1 = x0 + bb.width * w, y0 + bb.height * h
            lms = {}
            for name, kp in zip(_KEYPOINTS, loc.relative_keypoints):
                lms[name] = (kp.x * w - 0.5, kp.y * h - 0.5)  # relative coords span pixel edges; to pixel centres
            score = float(det.score[0]) if len(det.score) else None
            out.append((x0, y0, x1, y1, score, lms))
        return out


register_detector("mediapipe", MediaPipeDetector)
register_detector("mediapipe_short", partial(MediaPipeDetector, model="short"))
