"""The Python API: ``Recognizer(model, detector).analyze(x)`` -> faces with emotions.

Images flow decode -> detect -> align/crop (the model card's policy) -> classify; the faces of several images are
classified together in one ONNX batch, which is where most of the speed comes from on a CPU.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from ferkit.faces import crop_face, get_detector
from ferkit.faces.detection import Detection
from ferkit.io import ImageError, read_image
from ferkit.results import Face, ImageResult
from ferkit.runtime import ModelRuntime

Source = str | os.PathLike | np.ndarray


@dataclass
class _Pending:
    """An image that has been detected and cropped, waiting for its faces to be classified in a batch."""

    result: ImageResult
    image: np.ndarray | None
    detections: list[Detection]
    crops: list[np.ndarray]
    seconds: dict[str, float] = field(default_factory=dict)
    """Time spent per stage on this image (summed into Recognizer.timings by the thread that classifies)."""


class Recognizer:
    """Detect faces and classify their expressions with a model package.

    model: a shipped model name ('default') or a package folder. detector: 'auto', 'dlib', 'haar', 'mediapipe' or
    a Detector. min_face: ignore faces whose box is smaller than this many pixels on its shorter side. max_faces:
    keep only the largest N faces of each image. tta: 'flip' (default) averages each face with its mirror image:
    on FER2013 PrivateTest it adds 0.7 points of accuracy to the default model (docs/BENCHMARKS.md) for about 2 ms
    per photo, next to ~55 ms of face detection; 'none' classifies the crop alone. workers: images decoded and
    detected at the same time, in threads (default: one per core), when the detector allows it (dlib does:
    ``Detector.concurrent``); a list or folder then runs ~2x faster on two cores, a single image is unaffected.
    """

    def __init__(self, model: str | os.PathLike = "default", detector: str | object = "auto", min_face: int = 0,
                 max_faces: int | None = None, tta: str = "flip", threads: int | None = None,
                 images_per_batch: int = 16, workers: int | None = None) -> None:
        self.runtime = ModelRuntime(model, threads=threads, tta=tta)
        self.detector = get_detector(detector)
        self.min_face = min_face
        self.max_faces = max_faces
        self.images_per_batch = images_per_batch
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.workers = (workers or os.cpu_count() or 1) if getattr(self.detector, "concurrent", False) else 1
        self._pool: ThreadPoolExecutor | None = None
        self.timings: dict[str, float] = defaultdict(float)
        card = self.runtime.card
        self.crop_args = dict(policy=card.crop_policy, size=card.input_size,
                               channels="gray" if card.channels == 1 else "rgb", align=card.align,
                               margin=card.crop_margin)

    @property
    def model_name(self) -> str:
        return self.runtime.card.name

    def analyze(self, x: Source | Iterable[Source]) -> ImageResult | list[ImageResult]:
        """One ImageResult for a path or array; a list for a list of them.

        A single unreadable path raises ImageError; in a list, a failed image gets a result with ``error`` set, so
        one bad file never loses the others.
        """
        if isinstance(x, (str, os.PathLike, np.ndarray)):
            result = next(self.analyze_iter([x]))
            if result.error:
                raise ImageError(result.error)
            return result
        return list(self.analyze_iter(x))

    def analyze_iter(self, sources: Iterable[Source]) -> Iterator[ImageResult]:
        """Results in input order, classifying the faces of ``images_per_batch`` images per model call."""
        for result, _ in self.analyze_with_images(sources):
            yield result

    def analyze_with_images(self, sources: Iterable[Source]) -> Iterator[tuple[ImageResult, np.ndarray | None]]:
        """Like :meth:`analyze_iter`, also yielding each decoded RGB image (None when it failed), for annotation."""
        sources = iter(sources)
        while chunk := list(islice(sources, self.images_per_batch)):
            if self.workers > 1 and len(chunk) > 1:
                pending = list(self._detection_pool().map(self._detect_one, chunk))
            else:
                pending = [self._detect_one(s) for s in chunk]
            yield from self._classify(pending)

    def _detection_pool(self) -> ThreadPoolExecutor:
        """The worker threads, made once and kept: each thread loads its own detector models on first use, so
        fresh threads per call would pay that load (~0.3 s for dlib) every time."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ferkit-detect")
        return self._pool

    def _detect_one(self, source: Source) -> _Pending:
        name = "<array>" if isinstance(source, np.ndarray) else str(source)
        t0 = time.perf_counter()
        try:
            image = source if isinstance(source, np.ndarray) else read_image(source, "rgb")
            if image.ndim not in (2, 3) or image.dtype != np.uint8:
                raise ImageError(f"{name}: expected a uint8 HxW or HxWx3 array, got {image.dtype} {image.shape}")
        except ImageError as exc:
            return _Pending(ImageResult(name, 0, 0, [], error=str(exc)), None, [], [])
        t1 = time.perf_counter()
        detections = [d for d in self.detector.detect(image) if min(d.box[2], d.box[3]) >= self.min_face]
        if self.max_faces is not None:
            detections = detections[: self.max_faces]
        t2 = time.perf_counter()
        crops = [crop_face(image, d, **self.crop_args) for d in detections]
        t3 = time.perf_counter()
        h, w = image.shape[:2]
        return _Pending(ImageResult(name, w, h, [], self.model_name, self.detector.name), image, detections, crops,
                        {"decode": t1 - t0, "detect": t2 - t1, "align_crop": t3 - t2})

    def _classify(self, pending: list[_Pending]) -> Iterator[tuple[ImageResult, np.ndarray | None]]:
        crops = [c for p in pending for c in p.crops]
        for p in pending:
            for stage, seconds in p.seconds.items():
                self.timings[stage] += seconds
        t0 = time.perf_counter()
        scores = self.runtime.predict(crops)
        self.timings["classify"] += time.perf_counter() - t0
        self.timings["faces"] += len(crops)
        self.timings["images"] += len(pending)
        i = 0
        for p in pending:
            for det in p.detections:
                p.result.faces.append(Face(tuple(int(v) for v in det.box), scores[i], dict(det.landmarks), det.score))
                i += 1
            yield p.result, p.image


    def analyze_video(self, source: str | os.PathLike | int, out: str | os.PathLike | None = None, **options):
        """A video file, camera index or stream URL, followed over time: a ``ferkit.video.VideoRun``.

        Iterate it for per-frame ``FrameResult``s (faces with person ids and smoothed scores); ``.result()`` gives
        the ``VideoResult`` (per-person and group summaries, ``to_dataframe()``). ``out``: also write frames.csv,
        people.csv/json, timeline.png, annotated.mp4, summary.json and report.html there. ``options``: the fields
        of ``ferkit.video.VideoOptions`` (stride, detect_fps, max_people, start, end, smooth_s, lecture, ...).
        """
        from ferkit.video import VideoOptions, VideoRun

        return VideoRun(self, source, VideoOptions(**options), out)


def iter_image_paths(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files as given, folders expanded recursively to their image files (sorted, so runs are reproducible)."""
    from ferkit.io import is_image_path

    for p in map(Path, paths):
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                for fn in sorted(filenames):
                    if is_image_path(fn):
                        yield Path(dirpath) / fn
        else:
            yield p
