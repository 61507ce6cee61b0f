"""Test videos built from real photos (../shared/data/photos) with cv2.VideoWriter: camera moves, cuts, returns;
and readers of what `ferkit video` writes (CSV rows, decodable frames)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from ferkit.io import read_image


def window(photo: np.ndarray, cx: float, cy: float, zoom: float, size=(640, 360)) -> np.ndarray:
    """A ``size`` view of ``photo`` centred on (cx, cy) (fractions of the photo), ``zoom`` x the fit-to-width
    scale: a camera looking at the photo."""
    w, h = size
    scale = zoom * max(w / photo.shape[1], h / photo.shape[0])
    m = np.float32([[scale, 0, w / 2 - cx * photo.shape[1] * scale], [0, scale, h / 2 - cy * photo.shape[0] * scale]])
    return cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 90, 90))


def write_video(path: Path, frames, fps: float = 30.0, fourcc: str = "MJPG") -> Path:
    """Write RGB frames (an iterable) to ``path``; returns the path."""
    writer = None
    for rgb in frames:
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (rgb.shape[1], rgb.shape[0]))
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if writer is not None:
        writer.release()
    return path


def group_cut_return(photos: Path, n_a: int = 36, n_b: int = 18, n_c: int = 24):
    """A slow pan and zoom across a group photo of 3 people, a cut to a portrait of 1 other person, and a cut back
    to the group with the camera elsewhere: 4 real people, the group's 3 seen before and after the cut."""
    group = read_image(photos / "dlib__2008_001322.jpg")
    other = read_image(photos / "dlib__Tom_Cruise_avp_2014_4.jpg")
    for i in range(n_a):
        t = i / max(n_a - 1, 1)
        yield window(group, 0.46 + 0.06 * t, 0.52, 1.0 + 0.12 * t)
    for i in range(n_b):
        t = i / max(n_b - 1, 1)
        yield window(other, 0.5, 0.5, 0.5 + 0.03 * t)
    for i in range(n_c):
        t = i / max(n_c - 1, 1)
        yield window(group, 0.5 + 0.03 * t, 0.40, 1.0)


def fer_clip(faces: list[np.ndarray], frames_per_face: int = 2, size=(256, 192), seed: int = 0):
    """A clip from 48x48 FER2013 faces of one class: each face enlarged on a grey background for a few frames,
    moving a few pixels (the motion of a person sitting still)."""
    rng = np.random.default_rng(seed)
    w, h = size
    for face in faces:
        big = cv2.resize(face, (128, 128), interpolation=cv2.INTER_CUBIC)
        for _ in range(frames_per_face):
            canvas = np.full((h, w), 128, np.uint8)
            x, y = (w - 128) // 2 + int(rng.integers(-6, 7)), (h - 128) // 2 + int(rng.integers(-6, 7))
            canvas[y:y + 128, x:x + 128] = big
            yield cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def count_frames(path: Path) -> int:
    """Frames OpenCV can decode from ``path`` (a video that was closed cleanly, or a fragmented MP4 cut short)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n
