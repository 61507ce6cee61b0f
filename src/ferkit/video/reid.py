"""Re-identification: tracker ids -> people, through dlib's 128-d face descriptor.

A tracker id ends when a face leaves the frame for longer than the tracker waits, or jumps after a cut; the same
person then comes back under a new tracker id. Each new tracker id gets a descriptor (dlib's ResNet on the
5-point-aligned face, from face-recognition-models, offline) and takes the id of the closest person not in view
when the distance is below ``threshold`` (dlib's own same-person threshold is 0.6 on LFW; 0.5 is stricter, as
people in one video are often alike in pose and light). A descriptor costs ~0.1 s on one core, so it is computed
only when a track starts and a few times more while it lasts (``samples_at``), never on every frame.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from ferkit.errors import missing_extra

_MODELS = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")


def _model_path(name: str) -> str:
    spec = importlib.util.find_spec("face_recognition_models")
    for base in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(base, "models", name)
        if os.path.exists(path):
            return path
    raise missing_extra("faces", f"re-identifying people in videos ({name})")


@functools.cache
def _dlib_models():
    """dlib, its 5-point shape predictor, its descriptor network and a lock for them, loaded once per process
    (0.14 s, which was 4% of a 10 s clip's run when every video loaded them again). dlib's networks keep working
    buffers of their own, so runs in several threads of one process take turns through the lock."""
    try:
        import dlib
    except ImportError:
        raise missing_extra("faces", "re-identifying people in videos (dlib)") from None
    return (dlib, dlib.shape_predictor(_model_path(_MODELS[0])),
            dlib.face_recognition_model_v1(_model_path(_MODELS[1])), threading.Lock())


class FaceDescriber:
    """128-d dlib face descriptors of boxes in an RGB frame (unit scale: same person < ~0.6 apart)."""

    def __init__(self) -> None:
        self._dlib, self._shape, self._net, self._lock = _dlib_models()

    def describe(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        x, y, w, h = box
        rect = self._dlib.rectangle(int(x), int(y), int(x + w - 1), int(y + h - 1))
        with self._lock:
            shape = self._shape(rgb, rect)
            return np.asarray(self._net.compute_face_descriptor(rgb, shape), np.float32)


@dataclass
class _Person:
    pid: int
    descriptors: list[np.ndarray] = field(default_factory=list)

    def distance(self, d: np.ndarray) -> float:
        return float(min(np.linalg.norm(g - d) for g in self.descriptors)) if self.descriptors else float("inf")


@dataclass
class _Track:
    pid: int
    detections: int = 0


class IdentityBook:
    """Maps tracker ids to person ids (1, 2, ... in order of first appearance), with a descriptor gallery per person.

    describer None: no re-identification (each tracker id is a person), as in the lecture view's aggregate-only
    mode, which computes no biometric descriptors at all.
    samples_at: the detection counts of a track at which another descriptor is taken (after the first one), so a
    person's gallery covers several poses; at most ``max_gallery`` descriptors are kept per person.
    """

    def __init__(self, describer: FaceDescriber | None, threshold: float = 0.5,
                 samples_at: tuple[int, ...] = (10, 50, 300), max_gallery: int = 8) -> None:
        self.describer = describer
        self.threshold = threshold
        self.samples_at = samples_at
        self.max_gallery = max_gallery
        self._people: list[_Person] = []
        self._tracks: dict[int, _Track] = {}
        self.descriptors_computed = 0

    @property
    def people(self) -> int:
        return len(self._people)

    def galleries(self) -> dict[int, list[np.ndarray]]:
        """person id -> the descriptors kept for that person (``ferkit.scale.video`` matches people across the
        segments of a video with them)."""
        return {p.pid: list(p.descriptors) for p in self._people}

    def assign(self, rgb: np.ndarray, faces: list) -> dict[int, int]:
        """Person id of each ``TrackedFace`` (by track id) in one frame; descriptors only for faces with a
        detection (the boxes of detection frames), only when a track starts or reaches a sampling point."""
        out: dict[int, int] = {}
        in_view = {self._tracks[f.track_id].pid for f in faces if f.track_id in self._tracks}
        for f in faces:
            track = self._tracks.get(f.track_id)
            if track is None:
                track = self._tracks[f.track_id] = _Track(self._new_or_returning(rgb, f, in_view))
                in_view.add(track.pid)
            elif f.detection is not None:
                track.detections += 1
                if self.describer is not None and track.detections in self.samples_at:
                    person = self._people[track.pid - 1]
                    if len(person.descriptors) < self.max_gallery:
                        person.descriptors.append(self._describe(rgb, f.box))
            out[f.track_id] = track.pid
        return out

    def _describe(self, rgb: np.ndarray, box) -> np.ndarray:
        self.descriptors_computed += 1
        return self.describer.describe(rgb, box)

    def _new_or_returning(self, rgb: np.ndarray, face, in_view: set[int]) -> int:
        descriptor = self._describe(rgb, face.box) if self.describer is not None else None
        if descriptor is not None:
            candidates = [p for p in self._people if p.pid not in in_view]
            if candidates:
                best = min(candidates, key=lambda p: p.distance(descriptor))
                if best.distance(descriptor) < self.threshold:
                    if len(best.descriptors) < self.max_gallery:
                        best.descriptors.append(descriptor)
                    return best.pid
        person = _Person(len(self._people) + 1, [] if descriptor is None else [descriptor])
        self._people.append(person)
        return person.pid
