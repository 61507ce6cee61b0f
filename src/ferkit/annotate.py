"""Draw results onto images: a box per face, its emotion and confidence, colour by positive/neutral/negative.

Labels are placed, not just drawn above each box: in a crowded photo the spot above a face is often another face,
and at the image edge it is outside the picture. :func:`place_labels` tries spots around (then inside) each box,
keeps every label inside the image and picks the first spot that covers no other face and no label placed before
it (or, when there is none, the one that covers least). Text size grows with the image, and shrinks only when a
label would not fit across the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ferkit.results import ImageResult

GROUP_COLOURS = {"positive": (46, 160, 67), "neutral": (120, 120, 120), "negative": (200, 40, 40)}  # RGB

FONT = cv2.FONT_HERSHEY_SIMPLEX
PAD = 2
"""Pixels of label background around the text on each side."""

Rect = tuple[int, int, int, int]
"""x0, y0, x1, y1 (x1, y1 exclusive)."""


def text_style(shape: Sequence[int]) -> tuple[float, int]:
    """OpenCV font scale and line thickness for an image of this shape: 0.6 at 800 px on the long side, in
    proportion above (a 4000 px photo gets 3.0, readable when the photo is viewed whole), never below 0.35."""
    scale = max(shape[0], shape[1]) / 800
    return max(0.35, 0.6 * scale), max(1, round(2 * scale))


def _overlap(a: Rect, b: Rect) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0


def _candidates(box: Rect, lw: int, lh: int) -> list[tuple[int, int]]:
    """Top-left corners to try, best-looking first: above, below, beside, then inside the box."""
    x0, y0, x1, y1 = box
    cx = (x0 + x1 - lw) // 2
    return [(x0, y0 - lh), (x1 - lw, y0 - lh), (cx, y0 - lh),  # above: left, right, centre
            (x0, y1), (x1 - lw, y1), (cx, y1),  # below
            (x1, y0), (x0 - lw, y0), (x1, y1 - lh), (x0 - lw, y1 - lh),  # beside: right/left, top/bottom
            (x0, y0), (x0, y1 - lh)]  # inside: top, bottom


def place_labels(shape: Sequence[int], boxes: Sequence[Rect], sizes: Sequence[tuple[int, int]]) -> list[Rect]:
    """A rectangle for each box's label (``sizes``: label width, height), all inside an image of ``shape``.

    Each label goes to the first candidate spot (see :func:`_candidates`, clamped into the image) that overlaps
    no other face box and no label placed before it; failing that, to the spot with the least such overlap.
    """
    height, width = shape[0], shape[1]
    placed: list[Rect] = []
    for i, (box, (lw, lh)) in enumerate(zip(boxes, sizes)):
        others = [b for j, b in enumerate(boxes) if j != i]
        best: tuple | None = None
        for k, (x, y) in enumerate(_candidates(box, lw, lh)):
            x = min(max(x, 0), max(width - lw, 0))
            y = min(max(y, 0), max(height - lh, 0))
            rect = (x, y, min(x + lw, width), min(y + lh, height))
            cost = (sum(_overlap(rect, b) for b in others), sum(_overlap(rect, p) for p in placed), k)
            if best is None or cost < best[0]:
                best = (cost, rect)
            if cost[0] == 0 and cost[1] == 0:
                break
        placed.append(best[1])
    return placed


@dataclass
class Layout:
    """Where annotate() draws: per face its box, label text and label rectangle, plus the text style."""

    font_scale: float
    thickness: int
    boxes: list[Rect]
    texts: list[str]
    labels: list[Rect]
    text_heights: list[int]


def layout(shape: Sequence[int], result: ImageResult) -> Layout:
    """Text style for the image, then a label rectangle for every face (see :func:`place_labels`).

    ``shape`` may be that of a reduced copy of the analysed image (a large file decoded at a working size): the
    boxes, in original-image pixels, are scaled by its width over ``result.width``.
    """
    width = shape[1]
    k = width / result.width if result.width else 1.0
    font_scale, thickness = text_style(shape)
    texts = [f"{face.emotion} {face.confidence:.2f}" for face in result.faces]

    def widest(scale: float, thick: int) -> int:
        return max((cv2.getTextSize(t, FONT, scale, thick)[0][0] + 2 * PAD for t in texts), default=0)

    if widest(font_scale, thickness) > width:  # a small image (a face crop): shrink the text to fit across it
        thickness = 1
        while font_scale > 0.2 and widest(font_scale, thickness) > width:
            font_scale *= 0.9
    boxes = [(round(x * k), round(y * k), round((x + w) * k), round((y + h) * k))
             for x, y, w, h in (face.box for face in result.faces)]
    metrics = [cv2.getTextSize(t, FONT, font_scale, thickness) for t in texts]
    sizes = [(tw + 2 * PAD, th + base + 2 * PAD) for (tw, th), base in metrics]
    return Layout(font_scale, thickness, boxes, texts, place_labels(shape, boxes, sizes),
                  [th for (_, th), _ in metrics])


def annotate(image: np.ndarray, result: ImageResult) -> np.ndarray:
    """A copy of the RGB image with every face's box and 'emotion 0.93' label drawn on it.

    ``image`` may be a reduced copy of the analysed image (what ``Recognizer.analyze_with_images`` yields for a
    large file): the boxes, in original-image pixels, are scaled by its width over ``result.width``.
    """
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    plan = layout(out.shape, result)
    box_thickness = max(1, round(2 * max(out.shape[:2]) / 800))
    for face, box in zip(result.faces, plan.boxes):
        cv2.rectangle(out, box[:2], (box[2], box[3]), GROUP_COLOURS[face.group], box_thickness)
    for face, text, rect, th in zip(result.faces, plan.texts, plan.labels, plan.text_heights):
        cv2.rectangle(out, rect[:2], (rect[2] - 1, rect[3] - 1), GROUP_COLOURS[face.group], -1)
        cv2.putText(out, text, (rect[0] + PAD, rect[1] + PAD + th), FONT, plan.font_scale, (255, 255, 255),
                    plan.thickness, cv2.LINE_AA)
    return out
