"""Draw results onto images: a box per face, its emotion and confidence, colour by positive/neutral/negative."""

from __future__ import annotations

import cv2
import numpy as np

from ferkit.results import ImageResult

GROUP_COLOURS = {"positive": (46, 160, 67), "neutral": (120, 120, 120), "negative": (200, 40, 40)}  # RGB


def annotate(image: np.ndarray, result: ImageResult) -> np.ndarray:
    """A copy of the RGB image with every face's box and 'emotion 0.93' label drawn on it."""
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    scale = max(out.shape[:2]) / 800
    thickness = max(1, round(2 * scale))
    font_scale = max(0.4, 0.6 * scale)
    for face in result.faces:
        x, y, w, h = face.box
        colour = GROUP_COLOURS[face.group]
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thickness)
        text = f"{face.emotion} {face.confidence:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = y - th - base - 2 if y - th - base - 2 >= 0 else y + h
        cv2.rectangle(out, (x, top), (x + tw + 4, top + th + base + 2), colour, -1)
        cv2.putText(out, text, (x + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thickness,
                    cv2.LINE_AA)
    return out
