"""dlib's HOG + linear SVM face detector with the 5-point shape predictor for eye centres.

Needs ``dlib-bin`` (prebuilt dlib wheels) and ``face-recognition-models`` (ships
``shape_predictor_5_face_landmarks.dat``): ``pip install 'ferkit[faces]'``. The model file is located through
importlib without importing face_recognition_models, whose ``__init__`` needs pkg_resources (gone from
setuptools>=81). ``predictor_path=`` accepts the .dat file from dlib.net instead.

The 5 points are two corners of each eye and the base of the nose; each eye centre is the mean of its two corners.
In dlib's 5-point model, points 0-1 are the person's left eye (image right) and 2-3 the person's right eye.
"""

from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np

from ferkit.errors import missing_extra
from ferkit.faces.registry import Detector, DetectorUnavailable, register_detector


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise DetectorUnavailable(str(missing_extra("faces", "detector 'dlib'"))) from None
    return dlib


def default_predictor_path() -> str | None:
    """shape_predictor_5_face_landmarks.dat from the face-recognition-models package, or None if not installed."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = os.path.join(base, "models", "shape_predictor_5_face_landmarks.dat")
        if os.path.exists(path):
            return path
    return None


class DlibDetector(Detector):
    """dlib HOG frontal face detector (+ 5-point landmarks).

    max_side: images with a longer side are downscaled first (HOG time grows with pixels).
    upsample: dlib's pyramid upsampling (each step doubles the image; faces down to ~40 px instead of ~80 px are
      found). None (default) = 1 when the working image's long side is below ``small_side`` (600 px), else 0: small
      group photos need it, large portraits do not.
    threshold: dlib's ``adjust_threshold`` (higher = fewer, surer faces; 0 = dlib's default).
    landmarks: run the shape predictor for eye centres (0.2 ms per face).
    predictor_path: a shape_predictor_5_face_landmarks.dat to use instead of face-recognition-models' copy.
    """

    name = "dlib"
    concurrent = True
    """dlib releases the GIL while it scans, but its object_detector is not safe to share between threads (it keeps
    the scanned image's pyramid in the object), so each thread gets its own detector and shape predictor."""

    def __init__(self, max_side: int | None = 1024, upsample: int | None = None, small_side: int = 600,
                 threshold: float = 0.0, landmarks: bool = True, predictor_path: str | None = None) -> None:
        self.max_side = max_side
        self.upsample = upsample
        self.small_side = small_side
        self.threshold = threshold
        self._dlib = _import_dlib()
        self._per_thread = threading.local()
        self._predictor_path = None
        if landmarks:
            path = predictor_path or default_predictor_path()
            if path is None:
                raise DetectorUnavailable(str(missing_extra(
                    "faces", "detector 'dlib' (its landmarks model, from face-recognition-models)")))
            if not os.path.exists(path):
                raise DetectorUnavailable(f"detector 'dlib': no such shape predictor file {path}")
            self._predictor_path = path
        self._models()  # load now, so a broken install fails here and not in the first detect

    def _models(self):
        """This thread's (HOG detector, shape predictor or None)."""
        models = getattr(self._per_thread, "models", None)
        if models is None:
            predictor = self._dlib.shape_predictor(self._predictor_path) if self._predictor_path else None
            models = self._per_thread.models = (self._dlib.get_frontal_face_detector(), predictor)
        return models

    def _detect(self, rgb: np.ndarray):
        up = self.upsample
        if up is None:
            up = 1 if max(rgb.shape[:2]) < self.small_side else 0
        detector, predictor = self._models()
        rects, scores, _ = detector.run(rgb, up, self.threshold)
        out = []
        for rect, score in zip(rects, scores):
            lms = {}
            if predictor is not None:
                shape = predictor(rgb, rect)
                p = [(float(shape.part(i).x), float(shape.part(i).y)) for i in range(shape.num_parts)]
                if len(p) == 5:
                    lms = {
                        "left_eye": ((p[0][0] + p[1][0]) / 2, (p[0][1] + p[1][1]) / 2),
                        "right_eye": ((p[2][0] + p[3][0]) / 2, (p[2][1] + p[3][1]) / 2),
                        "nose": p[4],
                    }
            # dlib rectangles are inclusive: right() is the last pixel inside
            out.append((float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1),
                        float(score), lms))
        return out


register_detector("dlib", DlibDetector)
