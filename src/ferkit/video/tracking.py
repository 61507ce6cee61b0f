"""Faces followed from frame to frame with ByteTrack (supervision), boxes predicted between detection frames.

ByteTrack associates each detection frame's boxes with its tracks by IoU after a Kalman prediction, so its
tracker ids are stable while a face stays in view. Between detection frames (``--stride``) the box of each track
comes from the same Kalman state: its position plus the fraction of one detection step times its velocity. A
tracker id is not a person: it changes when a face leaves and comes back, or after a cut; ``reid`` maps tracker ids
to people.

Why supervision 0.30's ByteTrack: the maintained successor (roboflow ``trackers``) requires ``opencv-python``, which
would overwrite ferkit's ``opencv-python-headless``, and norfair 2.3 pins ``numpy<2``; supervision 0.30 needs
neither (docs/VIDEO.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ferkit.errors import missing_extra
from ferkit.faces.boxes import iou_matrix
from ferkit.faces.detection import Detection


@dataclass
class TrackedFace:
    """A face in one frame: its tracker id, its box (x, y, w, h ints) and the detection when one was made."""

    track_id: int
    box: tuple[int, int, int, int]
    detection: Detection | None


def _clip_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    ix0, iy0 = max(0, int(round(x0))), max(0, int(round(y0)))
    ix1, iy1 = min(width, int(round(x1))), min(height, int(round(y1)))
    if ix1 - ix0 < 2 or iy1 - iy0 < 2:
        return None
    return ix0, iy0, ix1 - ix0, iy1 - iy0


class FaceTracker:
    """ByteTrack over face detections made every ``stride``-th frame of a ``fps`` video.

    lost_seconds: how long a track that is no longer detected is kept to be matched again (by position) before
    it is dropped; re-identification by face descriptor takes over after that.
    """

    def __init__(self, fps: float, stride: int = 1, lost_seconds: float = 1.0) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # ByteTrack's deprecation notice (see module doc)
                from supervision import ByteTrack
        except ImportError:
            raise missing_extra("video", "ferkit video") from None
        steps_per_second = max(fps / stride, 1e-3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            # frame_rate=30 makes lost_track_buffer count detection steps exactly
            self._bt = ByteTrack(track_activation_threshold=0.25, minimum_matching_threshold=0.8,
                                 lost_track_buffer=max(1, int(round(lost_seconds * steps_per_second))), frame_rate=30)
        self.stride = stride
        self._live: list = []  # tracks returned by the last update (those drawn until the next detection frame)

    def update(self, detections: list[Detection], width: int, height: int) -> list[TrackedFace]:
        """Feed one detection frame's faces; returns the faces of confirmed tracks (each with its detection)."""
        tensors = np.array([[d.box[0], d.box[1], d.box[0] + d.box[2], d.box[1] + d.box[3], 1.0] for d in detections],
                           np.float32).reshape(-1, 5)
        tracks = self._bt.update_with_tensors(tensors)
        self._live = tracks
        if not tracks:
            return []
        track_boxes = np.array([t.tlbr for t in tracks], np.float32)
        out = []
        matched: dict[int, Detection] = {}
        if len(detections):
            iou = iou_matrix(tensors[:, :4], track_boxes)
            for j in range(len(tracks)):
                i = int(np.argmax(iou[:, j]))
                if iou[i, j] > 0.5:
                    matched[j] = detections[i]
        for j, t in enumerate(tracks):
            det = matched.get(j)
            if det is not None:
                out.append(TrackedFace(int(t.external_track_id), det.box, det))
            else:  # kept alive by a low-score match: the Kalman box
                box = _clip_box(*t.tlbr, width, height)
                if box is not None:
                    out.append(TrackedFace(int(t.external_track_id), box, None))
        return out

    def predict(self, fraction: float, width: int, height: int) -> list[TrackedFace]:
        """Boxes of the last detection frame's tracks, ``fraction`` (0..1) of a detection step later."""
        out = []
        for t in self._live:
            if t.mean is None:
                continue
            x, y, a, h = t.mean[:4] + fraction * t.mean[4:8]
            w = a * h
            box = _clip_box(x - w / 2, y - h / 2, x + w / 2, y + h / 2, width, height)
            if box is not None:
                out.append(TrackedFace(int(t.external_track_id), box, None))
        return out
