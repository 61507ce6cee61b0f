"""YuNet (Wu, Peng, Yu 2023, "YuNet: a tiny millisecond-level face detector"): a 75k-parameter CNN face detector
with 5 landmarks, run by ONNX Runtime (core ferkit: no extra, no download).

Why it is the default (docs/DESIGN.md, "Face detection"; numbers in docs/BENCHMARKS.md from benchmarks/detectors.py):
it finds faces from ~10 px to a few hundred px in one pass over the image at its own size, so small faces need no
upsampled pyramid (dlib HOG's cost), it copes with turned, tilted, dark and half-covered faces, and it is several
times faster than dlib's HOG and than fer's Haar cascade.

Weights: ``models/yunet_s_dynamic.onnx`` (238 kB, sha256 in :data:`MODEL_SHA256`) ships inside ferkit's wheel. It is
``onnx/yunet_s_dynamic.onnx`` of github.com/ShiqiYu/libfacedetection.train (commit 2b5e61d, Apache-2.0: see
``models/LICENSE-yunet.txt``), the same network as OpenCV's model zoo ``face_detection_yunet_2023mar.onnx`` exported
with dynamic height and width, so ONNX Runtime runs it at each image's size (padded to a multiple of 32).
ONNX Runtime ran it ~1.5x faster than OpenCV's ``cv2.FaceDetectorYN`` runs the fixed-size export (93 vs 147 ms at
1280x800, 2 cores), and this module's decoding reproduced FaceDetectorYN's boxes, landmarks and scores to 1e-4 px
on the shared photos when it was written.

Landmarks (YuNet's order: right eye, left eye, nose tip, right and left mouth corner) are the person's right and
left, like ferkit's Detection convention. YuNet's eye points can sit on the lid rather than the pupil (Biden in
two_people.jpg: 4.8 degrees of tilt where his pupils give 12.5), which would misalign crops, so when the ``faces``
extra is installed the eye centres come from dlib's 5-point shape predictor run on the (dlib-like) box (2.8 ms
a face on the loaded 2-core machine); YuNet's own points stay for the nose and mouth, and for the eyes without
the extra.
"""

from __future__ import annotations

import hashlib
import os
import threading
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ferkit.faces.registry import Detector, DetectorUnavailable, register_detector

MODEL_PATH = Path(__file__).resolve().parent / "models" / "yunet_s_dynamic.onnx"
MODEL_SHA256 = "daede24002cc8590f457998cc5e6c9e8b82f45f6bd969506a8913cd4ed10a2d3"
STRIDES = (8, 16, 32)
KEYPOINTS = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")
BOX_SIDE = 1.085
BOX_DROP = 0.04
"""YuNet's box runs from the hairline to below the chin; ferkit's crop margins were chosen on dlib's square boxes
(brows to lower lip), so YuNetDetector returns that box: on the 43 faces both find in shared/data/photos, dlib's side
is 1.085x YuNet's width (sd 8%) and its centre 0.04x YuNet's height lower (sd 4%)."""


@lru_cache(maxsize=None)
def _session(path: str, threads: int):
    """One ONNX Runtime session per model file and thread count: ``run`` is thread-safe and releases the GIL."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # detection threads of a folder run share the cores: idle ORT threads must not spin on them
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class YuNetDetector(Detector):
    """YuNet face detector (+ eyes, nose and mouth corners).

    max_side: images with a longer side are downscaled first. 1280 finds faces of ~30 px in a 4K frame (10 px, YuNet's
      smallest, after the 3x reduction); raise it for tinier faces in very large photos (time grows with pixels).
    min_confidence: score threshold (0.6, as OpenCV's FaceDetectorYN examples; no false positive at 0.6 in the
      benchmark, and faces that are small, turned or covered by a hand score 0.6-0.9).
    nms: IoU above which overlapping boxes are merged.
    threads: ONNX Runtime threads (default: every core).
    refine_eyes: eye centres from dlib's 5-point shape predictor (None: when the ``faces`` extra is installed).
    """

    name = "yunet"
    concurrent = True

    def __init__(self, max_side: int | None = 1280, min_confidence: float = 0.6, nms: float = 0.3,
                 threads: int | None = None, model_path: str | Path | None = None,
                 refine_eyes: bool | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401  (a core dependency; missing only in a broken install)
        except ImportError:
            raise DetectorUnavailable("detector 'yunet' needs ONNX Runtime: pip install onnxruntime") from None
        path = Path(model_path) if model_path is not None else MODEL_PATH
        if not path.is_file():
            raise DetectorUnavailable(f"detector 'yunet': no model file {path}; reinstall ferkit")
        self.max_side = max_side
        self.min_confidence = min_confidence
        self.nms = nms
        self._session = _session(str(path), threads or os.cpu_count() or 1)
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._eyes = _EyeRefiner() if refine_eyes is not False and _EyeRefiner.available() else None
        if refine_eyes and self._eyes is None:
            from ferkit.errors import missing_extra

            raise DetectorUnavailable(str(missing_extra("faces", "detector 'yunet' with refine_eyes=True")))

    def __repr__(self) -> str:
        return f"YuNetDetector(max_side={self.max_side}, min_confidence={self.min_confidence})"

    def _detect(self, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :h, :w] = rgb[:, :, ::-1].transpose(2, 0, 1)  # BGR, 0-255, zero padding right and bottom
        outs = dict(zip(self._outputs, self._session.run(self._outputs, {"input": x})))
        boxes, scores, points = [], [], []
        for s in STRIDES:
            score = np.sqrt(np.clip(outs[f"cls_{s}"].reshape(-1), 0, 1) * np.clip(outs[f"obj_{s}"].reshape(-1), 0, 1))
            keep = np.flatnonzero(score >= self.min_confidence)
            if not keep.size:
                continue
            row, col = np.divmod(keep, pw // s)
            bb = outs[f"bbox_{s}"].reshape(-1, 4)[keep]
            bw, bh = np.exp(bb[:, 2]) * s, np.exp(bb[:, 3]) * s
            boxes.append(np.stack([(col + bb[:, 0]) * s - bw / 2, (row + bb[:, 1]) * s - bh / 2, bw, bh], 1))
            scores.append(score[keep])
            points.append((outs[f"kps_{s}"].reshape(-1, 5, 2)[keep] + np.stack([col, row], 1)[:, None]) * s)
        if not boxes:
            return []
        boxes, scores, points = np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)
        kept = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.min_confidence, self.nms),
                          dtype=np.int64).reshape(-1)
        out = []
        for i in kept:
            bx, by, bw, bh = (float(v) for v in boxes[i])
            lms = {name: (float(p[0]), float(p[1])) for name, p in zip(KEYPOINTS, points[i])}
            side, cx, cy = BOX_SIDE * bw, bx + bw / 2, by + bh / 2 + BOX_DROP * bh
            box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
            if self._eyes is not None:
                lms.update(self._eyes(rgb, box))
            out.append((*box, float(scores[i]), lms))
        return out


class _EyeRefiner:
    """Eye centres from dlib's 5-point shape predictor (the ``faces`` extra), one predictor per thread."""

    def __init__(self) -> None:
        from ferkit.faces.backend_dlib import _import_dlib, default_predictor_path

        self._dlib = _import_dlib()
        self._path = default_predictor_path()
        self._local = threading.local()

    @staticmethod
    def available() -> bool:
        from ferkit.faces.backend_dlib import default_predictor_path

        try:
            import dlib  # noqa: F401
        except ImportError:
            return False
        return default_predictor_path() is not None

    def __call__(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> dict:
        predictor = getattr(self._local, "predictor", None)
        if predictor is None:
            predictor = self._local.predictor = self._dlib.shape_predictor(self._path)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        # the predictor converts whatever image it is given, so give it the face's neighbourhood, not the photo
        m = (x1 - x0) // 4 + 2
        cx0, cy0 = max(0, x0 - m), max(0, y0 - m)
        crop = np.ascontiguousarray(rgb[cy0:y1 + m, cx0:x1 + m])
        shape = predictor(crop, self._dlib.rectangle(x0 - cx0, y0 - cy0, x1 - 1 - cx0, y1 - 1 - cy0))
        if shape.num_parts != 5:
            return {}
        p = [(float(shape.part(i).x + cx0), float(shape.part(i).y + cy0)) for i in range(4)]
        # dlib's 5-point model: points 0-1 the person's left eye, 2-3 the right
        return {"left_eye": ((p[0][0] + p[1][0]) / 2, (p[0][1] + p[1][1]) / 2),
                "right_eye": ((p[2][0] + p[3][0]) / 2, (p[2][1] + p[3][1]) / 2)}


def model_sha256(path: str | Path = MODEL_PATH) -> str:
    """The sha256 of a model file (the tests compare the shipped one with MODEL_SHA256)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


register_detector("yunet", YuNetDetector)
