"""OpenCV Haar cascades (Viola-Jones): always installed with ferkit (opencv-python-headless<5 ships the XML files).

Faces: ``haarcascade_frontalface_*`` on the histogram-equalised gray image. Eyes: ``haarcascade_eye`` (then
``haarcascade_eye_tree_eyeglasses``) run inside the upper part of each face box; when a plausible pair is found
(one eye in each half of the box, at about the same height) the eye centres become ``right_eye`` (the one on the
image's left: the person's right) and ``left_eye``. When no pair is found the Detection has no landmarks.
No score (``None``).
"""

from __future__ import annotations

import os
from functools import lru_cache

import cv2
import numpy as np

from ferkit.faces.registry import Detector, DetectorUnavailable, register_detector


@lru_cache(maxsize=None)
def _cascade(filename: str) -> cv2.CascadeClassifier:
    base = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = os.path.join(base, filename) if base else None
    if not path or not os.path.exists(path):
        raise DetectorUnavailable(
            f"detector 'haar' needs OpenCV's bundled cascade {filename}: pip install 'opencv-python-headless<5'"
        )
    clf = cv2.CascadeClassifier(path)
    if clf.empty():
        raise DetectorUnavailable(f"detector 'haar': could not load {path}; reinstall 'opencv-python-headless<5'")
    return clf


class HaarDetector(Detector):
    """OpenCV Haar face cascade (+ eye cascade for eye centres).

    cascade: face cascade file in ``cv2.data.haarcascades``. Default ``haarcascade_frontalface_alt.xml``: on the 26
      benchmark photos (43 faces) it found 38 with 0 false positives, against 38 with 7-12 for ``_default`` and 37
      with 1-3 for ``_alt2`` (max_side 640/1024).
    max_side: 640 (1024 found no more faces and took 1.8x as long).
    scale_factor, min_neighbors: detectMultiScale settings (1.1 and 5: OpenCV's usual values).
    min_face: smallest face side in working-image pixels (at most ``max_side`` long).
    eyes: look for eye centres (about +25% time; found a pair on 15 of 38 faces in the benchmark).
    """

    name = "haar"

    def __init__(self, max_side: int | None = 640, cascade: str = "haarcascade_frontalface_alt.xml",
                 scale_factor: float = 1.1, min_neighbors: int = 5, min_face: int = 24, eyes: bool = True) -> None:
        self.max_side = max_side
        self.face_cascade = _cascade(cascade)
        self.eye_cascades = (_cascade("haarcascade_eye.xml"), _cascade("haarcascade_eye_tree_eyeglasses.xml")) if eyes \
            else ()
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face = min_face

    def _detect(self, rgb: np.ndarray):
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        faces = self.face_cascade.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(self.min_face, self.min_face)
        )
        out = []
        for x, y, w, h in np.asarray(faces, dtype=np.int64).reshape(-1, 4):
            lms = self._eyes(gray, int(x), int(y), int(w), int(h)) if self.eye_cascades else {}
            out.append((float(x), float(y), float(x + w), float(y + h), None, lms))
        return out

    def _eyes(self, gray: np.ndarray, x: int, y: int, w: int, h: int) -> dict:
        """Eye centres inside a face box: the eye cascade (then the eyeglasses one if no pair was found); best pair by
        distance to where eyes sit in a Haar face box."""
        if w < 36:  # eyes under ~6 px: the eye cascade cannot see them
            return {}
        top, bottom = y + int(0.15 * h), y + int(0.6 * h)
        roi = gray[top:bottom, x:x + w]
        if roi.size == 0:
            return {}
        for cascade in self.eye_cascades:
            found = self._pair(cascade, roi, x, y, w, h, top)
            if found:
                return found
        return {}

    @staticmethod
    def _pair(cascade, roi: np.ndarray, x: int, y: int, w: int, h: int, top: int) -> dict:
        min_eye = max(6, w // 9)
        found = cascade.detectMultiScale(roi, scaleFactor=1.1, minNeighbors=3, minSize=(min_eye, min_eye),
                                         maxSize=(w // 2, w // 2))
        centres = [(x + ex + ew / 2.0 - 0.5, top + ey + eh / 2.0 - 0.5)
                   for ex, ey, ew, eh in np.asarray(found, dtype=np.float64).reshape(-1, 4)]
        image_left = [c for c in centres if c[0] < x + w / 2.0]
        image_right = [c for c in centres if c[0] >= x + w / 2.0]
        # where eyes sit in a frontal Haar box: dlib's eye centres relative to the Haar boxes on the 26 benchmark photos
        # (37 faces) average (0.31, 0.40) and (0.67, 0.39) of the box, sd 0.02-0.04
        exp_l, exp_r = (x + 0.31 * w, y + 0.39 * h), (x + 0.69 * w, y + 0.39 * h)
        best, best_cost = None, np.inf
        for a in image_left:
            for b in image_right:
                dx, dy = b[0] - a[0], b[1] - a[1]
                if not (0.2 * w <= dx <= 0.75 * w) or abs(dy) > 0.5 * dx:
                    continue
                cost = np.hypot(a[0] - exp_l[0], a[1] - exp_l[1]) + np.hypot(b[0] - exp_r[0], b[1] - exp_r[1])
                if cost < best_cost:
                    best, best_cost = (a, b), cost
        if best is None:
            return {}
        return {"right_eye": best[0], "left_eye": best[1]}


register_detector("haar", HaarDetector)
