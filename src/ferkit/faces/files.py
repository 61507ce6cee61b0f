"""Faces straight from an image file, decoded no larger than detection needs.

A detector works on at most its ``max_side`` pixels, so a larger JPEG is decoded at 1/2, 1/4 or 1/8 scale by DCT
scaling (PIL's ``draft``, via :func:`ferkit.io.decode_image`): the smallest scale that keeps the longer side at least
0.8 ``max_side`` (a 4K frame at 1/2 for max_side 1280, a 2333 px portrait at 1/2, to 1167 px), then the detector
resizes what is still above ``max_side``. Nothing is re-encoded. Boxes and landmarks
come back in original-image pixels (tests/test_faces_mtcnn.py checks they match a full-size decode).
"""

from __future__ import annotations

import io
import math
import os

from PIL import Image

from ferkit.faces.detection import Detection
from ferkit.faces.registry import Detector, get_detector
from ferkit.io import decode_image


def to_original(det: Detection, scale: float, width: int, height: int) -> Detection:
    """A detection on a copy of an image scaled by ``scale``, in the ``width`` x ``height`` original's pixels."""
    if scale == 1.0:
        return det
    inv = 1.0 / scale
    x, y, w, h = det.box
    x0, y0 = max(0, round(x * inv)), max(0, round(y * inv))
    x1, y1 = min(width, round((x + w) * inv)), min(height, round((y + h) * inv))
    lms = {k: ((p[0] + 0.5) * inv - 0.5, (p[1] + 0.5) * inv - 0.5) for k, p in det.landmarks.items()}
    return Detection((x0, y0, max(1, x1 - x0), max(1, y1 - y0)), det.score, lms)


def detect_file(path: str | os.PathLike | bytes, detector: str | Detector = "auto") -> list[Detection]:
    """Every face in an image file (or its bytes), largest first, in original-image pixels.

    Raises ferkit.io.ImageError (one line) for a bad file.
    """
    det = get_detector(detector)
    decoded = decode_image(path, "rgb", decode_side(path, det.max_side))
    return [to_original(d, decoded.scale, decoded.width, decoded.height) for d in det.detect(decoded.pixels)]


MIN_DECODE = 0.8
"""A file is decoded to no less than this fraction of the detector's ``max_side`` (a face loses at most 20% of its
pixels' width to decoding, where the next DCT scale would lose 60%)."""


def decode_side(path: str | os.PathLike | bytes, max_side: int | None) -> int | None:
    """The ``max_side`` to decode ``path`` with so JPEG's DCT scaling (1, 1/2, 1/4, 1/8) lands at the smallest scale
    whose longer side is still >= MIN_DECODE * ``max_side``; None (full size) when there is nothing to gain or the
    header cannot be read (decode_image then reports the bad file)."""
    if not max_side:
        return None
    try:
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as img:
            long = max(img.size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    k = next(k for k in (8, 4, 2, 1) if k == 1 or long / k >= MIN_DECODE * max_side)
    return math.ceil(long / k) if k > 1 else None
