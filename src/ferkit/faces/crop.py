"""Face crops by named policy: one entry point, ``crop_face``, used by training and inference alike.

Policies (each defines a rectangle in the image; the crop is that rectangle resampled to ``size`` x ``size``):

- ``box``: the detector box itself, no margin (seed 004, Savchenko 2021: "crops without margins").
- ``margin``: the box grown by ``margin`` (default 0.2) times its width/height on **every side**, i.e. 1.4x as wide
  and tall at 0.2.
- ``eyes``: seed 003 spatial normalisation from the eye centres: 1.7 inter-eye distances to each side of the eye
  midpoint, 1.3 above and 3.2 below the eye line (a 3.4d x 4.5d rectangle). **Fallback:** a detection without both
  eyes (Haar when the eye cascade finds no pair; a custom detector) is cropped with the ``margin`` policy instead,
  with the same ``margin`` argument; ``crop_policy_used`` tells which one applies.

With ``align=True`` (default) the rectangle is rotated with the eye line so the eyes end up on one row (seed 003);
without eyes there is nothing to align to and the rectangle stays upright. Non-square rectangles are stretched to the
square output (the ``eyes`` rectangle by 4.5/3.4 horizontally, as the seed's crop followed by a square network input);
``keep_aspect=True`` grows the shorter side instead so nothing is stretched. Pixels outside the image are black.
``clahe=True`` applies CLAHE (seed 003, 5.2.1) to the crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ferkit.faces.align import Region, box_region, eyes_region, region_matrix, transform_points, warp_region
from ferkit.faces.detection import Detection, Point
from ferkit.faces.enhance import apply_clahe

CROP_POLICIES = ("box", "margin", "eyes")
CHANNELS = ("gray", "rgb")


def crop_policy_used(detection: Detection, policy: str) -> str:
    """The policy that ``crop_face`` really applies: 'eyes' falls back to 'margin' for a detection without eyes."""
    if policy not in CROP_POLICIES:
        raise ValueError(f"unknown crop policy {policy!r}; choose from {', '.join(CROP_POLICIES)}")
    if policy == "eyes" and detection.eyes is None:
        return "margin"
    return policy


def crop_region(detection: Detection, policy: str = "box", align: bool = True, margin: float = 0.2,
                keep_aspect: bool = False) -> Region:
    """The image rectangle a crop policy takes for one detection (see module docstring)."""
    used = crop_policy_used(detection, policy)
    if used == "eyes":
        left, right = detection.eyes  # type: ignore[misc]
        region = eyes_region(left, right, align=align)
    else:
        region = box_region(detection, margin if used == "margin" else 0.0, align=align)
    return region.squared() if keep_aspect else region


def _check_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        w = h = int(size)
    else:
        w, h = (int(v) for v in size)
    if w < 1 or h < 1:
        raise ValueError(f"crop size must be positive, not {size!r}")
    return w, h


def crop_matrix(detection: Detection, policy: str = "box", size: int | Sequence[int] = 224, align: bool = True,
                margin: float = 0.2, keep_aspect: bool = False) -> np.ndarray:
    """2x3 affine matrix from image pixels to crop pixels for the same arguments as ``crop_face``."""
    w, h = _check_size(size)
    return region_matrix(crop_region(detection, policy, align, margin, keep_aspect), w, h)


def crop_face(image: np.ndarray, detection: Detection, policy: str = "box", size: int | Sequence[int] = 224,
              channels: str = "rgb", align: bool = True, clahe: bool = False, margin: float = 0.2,
              keep_aspect: bool = False) -> np.ndarray:
    """One face crop: uint8, ``size`` x ``size`` (or (width, height)), HxW for channels='gray', HxWx3 for 'rgb'.

    image: uint8 HxWx3 RGB or HxW gray (the image the detection's coordinates refer to).
    policy: 'box' | 'margin' | 'eyes' (see module docstring, incl. the 'eyes' -> 'margin' fallback).
    align: rotate so the eye line is horizontal (when the detection has both eyes).
    clahe: contrast-limited adaptive histogram equalisation on the crop (on L of Lab for RGB).
    """
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 'gray' or 'rgb', not {channels!r}")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError("image must be a uint8 HxW or HxWx3 numpy array (use ferkit.io.read_image)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] != 3:
        raise ValueError(f"image must have 1 or 3 channels, not {image.shape[2]}")
    w, h = _check_size(size)
    region = crop_region(detection, policy, align, margin, keep_aspect)
    out = warp_region(image, region, w, h)
    if channels == "gray" and out.ndim == 3:
        out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    elif channels == "rgb" and out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)
    if clahe:
        out = apply_clahe(out)
    return np.ascontiguousarray(out)


def crop_faces(image: np.ndarray, detections: Sequence[Detection], policy: str = "box",
               size: int | Sequence[int] = 224, channels: str = "rgb", align: bool = True, clahe: bool = False,
               margin: float = 0.2, keep_aspect: bool = False) -> np.ndarray:
    """All faces of one image as a batch: uint8 (N, H, W) for gray or (N, H, W, 3) for rgb; N may be 0."""
    w, h = _check_size(size)
    crops = [crop_face(image, d, policy, (w, h), channels, align, clahe, margin, keep_aspect) for d in detections]
    if not crops:
        return np.zeros((0, h, w) if channels == "gray" else (0, h, w, 3), np.uint8)
    return np.stack(crops)


def detect_and_crop(image: np.ndarray, detector="auto", **crop_kwargs) -> tuple[list[Detection], np.ndarray]:
    """Detect every face (``detector``: a name for ``get_detector`` or a Detector) and crop them all.

    Returns ``(detections, crops)`` with crops as from ``crop_faces(image, detections, **crop_kwargs)``.
    """
    from ferkit.faces.registry import get_detector

    detections = get_detector(detector).detect(image)
    return detections, crop_faces(image, detections, **crop_kwargs)


def landmarks_in_crop(detection: Detection, policy: str = "box", size: int | Sequence[int] = 224,
                      align: bool = True, margin: float = 0.2, keep_aspect: bool = False) -> dict[str, Point]:
    """The detection's landmarks in the coordinates of the crop ``crop_face`` makes with the same arguments."""
    return transform_points(crop_matrix(detection, policy, size, align, margin, keep_aspect), detection.landmarks)
