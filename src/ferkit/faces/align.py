"""Eye-line alignment (seed 003, van der Weel 2019, 5.2.2): rotate about a centre so the eye line is horizontal.

Everything here is one affine map per face: an oriented rectangle in the image (centre, size, angle) is warped straight
to the output pixels, so rotation, crop and resize happen in a single ``cv2.warpAffine`` on the face region only
(never a rotation of the whole image). ``face_region`` describes the rectangle, ``region_matrix`` gives the
image->crop affine matrix (use it to move landmarks into the crop), ``warp_region`` does the pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ferkit.faces.detection import Detection, Point


def eye_angle(left_eye: Point, right_eye: Point) -> float:
    """Angle (degrees, image coordinates with y down) of the eye line, from the person's right eye to their left eye.

    0 for an upright frontal face (right eye on the image's left), positive when the face is tilted so that the
    person's left eye (image right) is lower, about +-180 for an upside-down face.
    """
    return math.degrees(math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))


@dataclass(frozen=True)
class Region:
    """An oriented rectangle in image pixel coordinates: centre (cx, cy), width, height (pixels), angle (degrees,
    the direction of the rectangle's x axis in the image, as from ``eye_angle``)."""

    cx: float
    cy: float
    width: float
    height: float
    angle: float = 0.0

    def corners(self) -> np.ndarray:
        """4x2 array: top-left, top-right, bottom-right, bottom-left corners (edges, in image pixel coordinates)."""
        a = math.radians(self.angle)
        ux, uy = math.cos(a), math.sin(a)  # region x axis in the image
        vx, vy = -uy, ux  # region y axis (down)
        hw, hh = self.width / 2, self.height / 2
        return np.array([[self.cx + sx * hw * ux + sy * hh * vx, self.cy + sx * hw * uy + sy * hh * vy]
                         for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])

    def squared(self) -> Region:
        """The same region grown along its shorter side to a square (same centre and angle)."""
        side = max(self.width, self.height)
        return Region(self.cx, self.cy, side, side, self.angle)


def region_matrix(region: Region, out_w: int, out_h: int) -> np.ndarray:
    """2x3 affine matrix mapping image pixel coordinates to output pixel coordinates (pixel centres at integers).

    The region's edges map to the output's edges: its top-left corner to (-0.5, -0.5), its bottom-right corner to
    (out_w - 0.5, out_h - 0.5).
    """
    a = math.radians(region.angle)
    c, s = math.cos(a), math.sin(a)
    sx, sy = out_w / region.width, out_h / region.height
    # image point p -> local frame (rotate by -angle about the centre) -> scale -> shift: region edges -> output edges
    rot = np.array([[c, s], [-s, c]])
    lin = np.diag([sx, sy]) @ rot
    # region centre in image pixel coords: box (x, y, w, h) has its centre at x + w/2 - 0.5 (see face_region)
    t = np.array([out_w / 2 - 0.5, out_h / 2 - 0.5]) - lin @ np.array([region.cx, region.cy])
    return np.hstack([lin, t[:, None]])


def warp_region(image: np.ndarray, region: Region, out_w: int, out_h: int, border_value: int = 0) -> np.ndarray:
    """The pixels of ``region`` resampled to ``out_w`` x ``out_h``; parts outside the image are ``border_value``.

    Downscaling by more than 2x warps at the region's own resolution first and then shrinks with INTER_AREA (a
    plain warp would alias); upscaling uses bilinear interpolation.
    """
    inter_w, inter_h = out_w, out_h
    if region.width > 2 * out_w or region.height > 2 * out_h:
        inter_w, inter_h = max(out_w, int(round(region.width))), max(out_h, int(round(region.height)))
    m = region_matrix(region, inter_w, inter_h)
    channels = 1 if image.ndim == 2 else image.shape[2]
    border = border_value if channels == 1 else (border_value,) * channels
    out = cv2.warpAffine(image, m, (inter_w, inter_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=border)
    if (inter_w, inter_h) != (out_w, out_h):
        out = cv2.resize(out, (out_w, out_h), interpolation=cv2.INTER_AREA)
    return out


def transform_points(matrix: np.ndarray, points: dict[str, Point]) -> dict[str, Point]:
    """Apply a 2x3 affine matrix to named points (e.g. a Detection's landmarks into crop coordinates)."""
    return {k: (float(matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]),
                float(matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2])) for k, (x, y) in points.items()}


def box_region(detection: Detection, margin: float = 0.0, align: bool = True) -> Region:
    """The detector box grown by ``margin`` x its width/height on every side (margin 0.2: a box 1.4x as wide and tall),
    rotated about its centre by the eye angle when ``align`` and both eyes are known."""
    x, y, w, h = detection.box
    angle = 0.0
    if align and detection.eyes is not None:
        angle = eye_angle(*detection.eyes)
    return Region(x + w / 2 - 0.5, y + h / 2 - 0.5, w * (1 + 2 * margin), h * (1 + 2 * margin), angle)


# Seed 003 spatial normalisation, in inter-eye distances from the midpoint between the eyes
EYES_SIDE = 1.7
EYES_ABOVE = 1.3
EYES_BELOW = 3.2


def eyes_region(left_eye: Point, right_eye: Point, align: bool = True) -> Region:
    """Seed 003 (van der Weel 2019, 5.2.3) spatial normalisation: from the midpoint between the eyes, 1.7 inter-eye
    distances to each side, 1.3 above and 3.2 below the eye line: a 3.4d x 4.5d rectangle (d = inter-eye distance).

    With ``align`` the rectangle follows the eye line (seed 003 rotates first, then crops); without, it stays
    axis-aligned around the same midpoint and uses the same d.
    """
    mx, my = (left_eye[0] + right_eye[0]) / 2, (left_eye[1] + right_eye[1]) / 2
    d = math.hypot(left_eye[0] - right_eye[0], left_eye[1] - right_eye[1])
    angle = eye_angle(left_eye, right_eye) if align else 0.0
    a = math.radians(angle)
    down = (EYES_BELOW - EYES_ABOVE) / 2 * d  # the centre lies this far below the eye midpoint, along the face's y axis
    return Region(mx - math.sin(a) * down, my + math.cos(a) * down, 2 * EYES_SIDE * d, (EYES_ABOVE + EYES_BELOW) * d,
                  angle)


def align_face(image: np.ndarray, detection: Detection, margin: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """The face region rotated so the eye line is horizontal (seed 003), at the image's own resolution.

    The region is the detector box grown by ``margin`` on each side, rotated about the box centre by the eye angle
    (no rotation when the detection has no eyes). Returns ``(face, matrix)``: ``matrix`` (2x3) maps image pixel
    coordinates into ``face`` (``transform_points(matrix, detection.landmarks)`` puts the eyes on one row).
    For a fixed-size crop with a crop policy use ``ferkit.faces.crop_face``.
    """
    region = box_region(detection, margin, align=True)
    w, h = max(1, int(round(region.width))), max(1, int(round(region.height)))
    return warp_region(image, region, w, h), region_matrix(region, w, h)
