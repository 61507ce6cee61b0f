"""Drawing an explanation: a heat map blended onto the photo, the crop each face was classified from, a caption.

Only pixels where the heat is above zero change colour (each face's heat lives inside its crop), plus a one-pixel
outline of each crop; the face list goes into a caption strip under the photo, so the photo itself is never covered
by text and the overlay differs from the photo only where the model looked.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

ALPHA = 0.55
"""Opacity of the colour map where the heat is 1 (it fades with the heat, to the plain photo at 0)."""

FONT = cv2.FONT_HERSHEY_SIMPLEX


def colormap(heat: np.ndarray) -> np.ndarray:
    """RGB uint8 'jet' colours for heat in [0, 1] (blue low, red high), as Grad-CAM papers draw it."""
    bgr = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def blend(image: np.ndarray, heat: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """``image`` (HxWx3 RGB uint8) with the colour map of ``heat`` (HxW in [0, 1]) blended in at ``alpha * heat``;
    pixels of zero heat are returned unchanged."""
    a = (alpha * np.clip(heat, 0, 1))[..., None].astype(np.float32)
    out = image.astype(np.float32) * (1 - a) + colormap(heat).astype(np.float32) * a
    out = np.where(a > 0, np.clip(np.rint(out), 0, 255), image).astype(np.uint8)
    return out


def outline(image: np.ndarray, regions: Sequence[np.ndarray], colour: tuple[int, int, int] = (255, 255, 255)) -> None:
    """Draw each region (4x2 corners, image pixels) as a closed 1-px polygon, in place."""
    for corners in regions:
        cv2.polylines(image, [np.round(corners).astype(np.int32).reshape(-1, 1, 2)], True, colour, 1, cv2.LINE_AA)


def with_caption(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``image`` with a white strip below it holding ``lines`` of black text (nothing added for no lines)."""
    if not lines:
        return image
    scale = max(0.4, image.shape[1] / 1600)
    thick = max(1, round(scale * 1.5))
    (_, th), base = cv2.getTextSize("Ag", FONT, scale, thick)
    step = th + base + 6
    strip = np.full((step * len(lines) + 6, image.shape[1], 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(strip, line, (6, 3 + th + i * step), FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return np.vstack([image, strip])
