"""Optional enhancement of face crops: CLAHE (contrast-limited adaptive histogram equalisation, seed 003, 5.2.1)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=8)
def _clahe(clip_limit: float, tile_grid: tuple[int, int]) -> cv2.CLAHE:
    return cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tile_grid)


def apply_clahe(image: np.ndarray, clip_limit: float = 2.0, tile_grid: tuple[int, int] = (8, 8)) -> np.ndarray:
    """CLAHE on a uint8 gray image, or on the lightness (L of CIE Lab) of a uint8 RGB image so colours keep their hue.

    clip_limit 2.0 and an 8x8 tile grid are OpenCV's usual values (seed 003 gives no numbers).
    """
    if image.dtype != np.uint8:
        raise ValueError(f"CLAHE needs a uint8 image, not {image.dtype}")
    clahe = _clahe(float(clip_limit), (int(tile_grid[0]), int(tile_grid[1])))
    if image.ndim == 2:
        return clahe.apply(image)
    if image.ndim == 3 and image.shape[2] == 3:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
        lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
        return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    raise ValueError(f"CLAHE needs an HxW or HxWx3 image, not shape {image.shape}")
