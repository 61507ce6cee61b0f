"""The Python API: ``Recognizer(model, detector).analyze(x)`` -> faces with emotions.

Images flow decode -> detect -> align/crop (the model card's policy) -> classify; the faces of several images are
classified together in one ONNX batch, which is where most of the speed comes from on a CPU.

Memory is bounded by design, whatever the number or size of the images (docs/DESIGN.md, "Memory"):

- a file is decoded straight to a working image of at most ``max_side`` pixels on its longer side (JPEG by DCT
  scaling, other formats by an integer box reduction; :func:`ferkit.io.decode_image`), never smaller than the
  detector's own working size, so detection sees what it saw before and the classifier's 48-64 px crops come from
  at least as many pixels; boxes and landmarks are mapped back to original-image pixels;
- the full-size decodes running at once in the detection threads share a byte budget (``decode_bytes``): a huge
  image waits until it can decode alone instead of N threads holding N full-size images;
- an image is released as soon as its faces are cropped (:meth:`Recognizer.analyze_with_images` keeps the working
  image for annotation); a batch is classified as soon as it holds ``images_per_batch`` images or ``batch_bytes``
  bytes of kept images, whichever comes first.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferkit.errors import UserInputError
from ferkit.classify import Classifier, CropSpec, FaceCrops, crop_faces, load_classifier, n_faces
from ferkit.faces import get_detector
from ferkit.faces.registry import Detector
from ferkit.faces.detection import Detection, make_detection
from ferkit.io import ImageError, MemoryBudget, decode_image
from ferkit.results import Face, ImageResult
from ferkit.runtime import DEFAULT_TTA

Source = str | os.PathLike | np.ndarray

MIN_WORK_SIDE = 1024
"""The working image's longer side is reduced to no less than this (nor than the detector's ``max_side``)."""

MiB = 1 << 20


@dataclass
class Pending:
    """An image that has been detected and cropped, waiting for its faces to be classified in a batch (picklable:
    ``ferkit.scale`` ships it from a detection task to a classifier actor)."""

    result: ImageResult
    image: np.ndarray | None
    """The working image, kept only for :meth:`Recognizer.analyze_with_images`; None otherwise or when it failed."""
    detections: list[Detection]
    """In original-image pixels."""
    crops: FaceCrops
    """Each face cropped once per crop spec of the classifier."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Time spent per stage on this image (summed into Recognizer.timings by the thread that classifies)."""

    @property
    def nbytes(self) -> int:
        return (self.image.nbytes if self.image is not None else 0) + sum(c.nbytes for cs in self.crops.values() for c in cs)


def to_original(detection: Detection, scale: float, width: int, height: int) -> Detection:
    """A detection found on a working image ``scale`` times the size of a ``width`` x ``height`` original, in
    original-image pixels (the same mapping the detectors use for their own downscaled copies)."""
    if scale == 1.0:
        return detection
    x, y, w, h = detection.box
    mapped = make_detection(x, y, x + w, y + h, width, height, scale, detection.score, detection.landmarks)
    return mapped if mapped is not None else detection


class Recognizer:
    """Detect faces and classify their expressions with a model or ensemble package.

    model: a shipped model name ('default'), a model or ensemble package folder, or a
    :class:`ferkit.classify.Classifier`. detector: 'auto', 'dlib', 'haar', 'mediapipe' or
    a Detector. min_face: ignore faces whose box is smaller than this many pixels on its shorter side. max_faces:
    keep only the largest N faces of each image. tta: 'flip' (default, ``ferkit.runtime.DEFAULT_TTA``) averages each
    face with its mirror image: on FER2013 PrivateTest it adds 0.7 points of accuracy to the default model
    (docs/BENCHMARKS.md) for about 2 ms per photo, next to ~55 ms of face detection; 'none' classifies the crop
    alone; 'tencrop' averages ten shifted and mirrored views (10x the classification cost). workers: images decoded and
    detected at the same time, in threads (default: one per core), when the detector allows it (dlib does:
    ``Detector.concurrent``); a list or folder then runs ~2x faster on two cores, a single image is unaffected.
    images_per_batch, batch_bytes, decode_bytes: the memory bounds of the module docstring. max_side: the working
    image's longer side (default: twice the larger of the detector's ``max_side`` and 1024, i.e. 2048 for the
    shipped detectors; the integer reduction leaves it between half that and that).

    Use it as a context manager (or call :meth:`close`) to stop its detection threads when done.
    """

    def __init__(self, model: str | os.PathLike = "default", detector: str | object = "auto", min_face: int = 0,
                 max_faces: int | None = None, tta: str = DEFAULT_TTA, threads: int | None = None,
                 images_per_batch: int = 16, workers: int | None = None, batch_bytes: int = 64 * MiB,
                 decode_bytes: int = 512 * MiB, max_side: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise UserInputError(f"workers must be at least 1, not {workers}")
        if images_per_batch < 1 or batch_bytes < 1:
            raise UserInputError("images_per_batch and batch_bytes must be positive")
        self.classifier: Classifier = load_classifier(model, tta=tta, threads=threads)
        self.detector = get_detector(detector)
        self.min_face = min_face
        self.max_faces = max_faces
        self.images_per_batch = images_per_batch
        self.batch_bytes = batch_bytes
        self.max_side = max_side or 2 * max(self.detector.max_side or 0, MIN_WORK_SIDE)
        self._decode_budget = MemoryBudget(decode_bytes)
        self.workers = (workers or os.cpu_count() or 1) if getattr(self.detector, "concurrent", False) else 1
        self._pool: ThreadPoolExecutor | None = None
        self.timings: dict[str, float] = defaultdict(float)

    @classmethod
    def for_video(cls, model: str | os.PathLike = "default", detector: str | object = "auto",
                  **kwargs) -> Recognizer:
        """A Recognizer set up for video: one ONNX Runtime thread per session (the classifier's, and MTCNN's when
        it is the detector), as ``ferkit video`` and its Ray segments use.

        Why: a video run keeps both cores busy with threads of its own (the main loop, detection one step ahead,
        annotated.mp4's encoder); a thread per core inside each ONNX session as well oversubscribed them, and the
        classifier's threads spun between its small batches. Measured on the shared 720x480 clip: 15-18 ms of CPU
        per frame instead of 30-33, 45-49 fps instead of 27 (docs/BENCHMARKS.md). ``kwargs`` go to ``Recognizer``.
        """
        found = get_detector(detector)
        if found.name == "mtcnn":
            found = get_detector("mtcnn", threads=1)
        kwargs.setdefault("workers", 1)
        return cls(model, found, threads=1, **kwargs)

    @property
    def model_name(self) -> str:
        return self.classifier.name

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    @property
    def tta(self) -> str:
        return self.classifier.tta

    def classify(self, image: np.ndarray, detections: list[Detection],
                 tta: str | None = None) -> list[dict[str, float]]:
        """Scores (label -> probability) of each detected face of ``image``, cropped as the classifier needs."""
        return self.classifier.predict(self.classifier.crop(image, detections), tta)

    def embed(self, image: np.ndarray, detections: list[Detection]) -> np.ndarray:
        """(faces, D) face embeddings of the detected faces of ``image`` (:meth:`Classifier.embed`)."""
        return self.classifier.embed(self.classifier.crop(image, detections))

    def close(self) -> None:
        """Stop the detection threads (waiting for the images they are on). The Recognizer stays usable: a later
        call starts new threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def analyze_iter(self, sources: Iterable[Source], tta: str | None = None) -> Iterator[ImageResult]:
        """Results in input order; each image is released once its faces are cropped. ``tta``: this call's
        test-time augmentation (default: the Recognizer's)."""
        for result, _ in self._run(sources, keep_images=False, tta=tta):
            yield result

    def analyze_with_images(self, sources: Iterable[Source]) -> Iterator[tuple[ImageResult, np.ndarray | None]]:
        """Like :meth:`analyze_iter`, also yielding each image (None when it failed), for annotation.

        The image is the working image: for a file larger than ``max_side`` it is a reduced copy, and the result's
        boxes (in original pixels) map onto it by ``image.shape[1] / result.width``
        (:func:`ferkit.annotate.annotate` does this).
        """
        yield from self._run(sources, keep_images=True)

    def _run(self, sources: Iterable[Source], keep_images: bool,
             tta: str | None = None) -> Iterator[tuple[ImageResult, np.ndarray | None]]:
        batch: list[Pending] = []
        held = 0
        for pending in self._detected(sources, keep_images):
            batch.append(pending)
            held += pending.nbytes
            if len(batch) >= self.images_per_batch or held >= self.batch_bytes:
                yield from self._classify(batch, tta)
                batch, held = [], 0
        if batch:
            yield from self._classify(batch, tta)

    def _detected(self, sources: Iterable[Source], keep_images: bool) -> Iterator[Pending]:
        """Images decoded, detected and cropped, in input order; with several workers, at most ``2 * workers``
        submitted ahead (the threads keep working while the caller classifies a batch)."""
        if self.workers == 1:
            for source in sources:
                yield self._detect_one(source, keep_images)
            return
        pool = self._detection_pool()
        ahead: deque[Future[Pending]] = deque()
        try:
            for source in sources:
                ahead.append(pool.submit(self._detect_one, source, keep_images))
                if len(ahead) >= 2 * self.workers:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            for future in ahead:  # the caller stopped early: drop what it will never read
                future.cancel()

    def _detection_pool(self) -> ThreadPoolExecutor:
        """The worker threads, made once and kept until :meth:`close`: each thread loads its own detector models on
        first use, so fresh threads per call would pay that load (~0.3 s for dlib) every time."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ferkit-detect")
        return self._pool

    def _detect_one(self, source: Source, keep_image: bool) -> Pending:
        return detect_and_crop(source, self.detector, self.classifier.crop_specs, self.max_side, self.min_face,
                               self.max_faces, self.model_name, self._decode_budget, keep_image)

    def _classify(self, pending: list[Pending],
                  tta: str | None = None) -> Iterator[tuple[ImageResult, np.ndarray | None]]:
        for p in pending:
            for stage, seconds in p.seconds.items():
                self.timings[stage] += seconds
        t0 = time.perf_counter()
        faces = classify_pending(self.classifier, pending, tta)
        self.timings["classify"] += time.perf_counter() - t0
        self.timings["faces"] += faces
        self.timings["images"] += len(pending)
        for p in pending:
            image, p.image = p.image, None  # the caller's reference is the last one
            yield p.result, image

    def analyze_video(self, source: str | os.PathLike | int, out: str | os.PathLike | None = None, **options):
        """A video file, camera index or stream URL, followed over time: a ``ferkit.video.VideoRun``.

        Iterate it for per-frame ``FrameResult``s (faces with person ids and smoothed scores); ``.result()`` gives
        the ``VideoResult`` (per-person and group summaries, ``to_dataframe()``). ``out``: also write frames.csv,
        people.csv/json, timeline.png, annotated.mp4, summary.json and report.html there. ``options``: the fields
        of ``ferkit.video.VideoOptions`` (stride, detect_fps, max_people, start, end, smooth_s, lecture, ...).
        """
        from ferkit.video import VideoOptions, VideoRun

        return VideoRun(self, source, VideoOptions(**options), out)


def detect_and_crop(source: Source, detector: Detector, crop_specs: Sequence[CropSpec], max_side: int,
                    min_face: int = 0, max_faces: int | None = None, model_name: str = "",
                    budget: MemoryBudget | None = None, keep_image: bool = False,
                    name: str | None = None) -> Pending:
    """Decode one image (a path, its bytes or an array), detect its faces and crop each once per crop spec.

    The first half of :class:`Recognizer`, as a function so that a Ray task (``ferkit.scale.analyze``) runs exactly
    what a Recognizer runs. A file that cannot be decoded gives a Pending whose result has ``error`` set (never an
    exception). ``name``: the source shown in the result (default: the path; required for bytes).
    """
    if name is None:
        name = "<array>" if isinstance(source, np.ndarray) else "<bytes>" if isinstance(source, bytes) else str(source)
    t0 = time.perf_counter()
    try:
        if isinstance(source, np.ndarray):
            if source.ndim not in (2, 3) or source.dtype != np.uint8:
                raise ImageError(f"{name}: expected a uint8 HxW or HxWx3 array, got {source.dtype} {source.shape}")
            image, scale, (height, width) = source, 1.0, source.shape[:2]
        else:
            decoded = decode_image(source, "rgb", max_side, budget, name=name)
            image, scale, width, height = decoded.pixels, decoded.scale, decoded.width, decoded.height
    except ImageError as exc:
        return Pending(ImageResult(name, 0, 0, [], error=str(exc)), None, [], {})
    t1 = time.perf_counter()
    found = [(d, to_original(d, scale, width, height)) for d in detector.detect(image)]
    found = [(d, o) for d, o in found if min(o.box[2], o.box[3]) >= min_face]
    if max_faces is not None:
        found = found[:max_faces]
    t2 = time.perf_counter()
    crops = crop_faces(crop_specs, image, [d for d, _ in found])
    t3 = time.perf_counter()
    return Pending(ImageResult(name, width, height, [], model_name, detector.name), image if keep_image else None,
                   [o for _, o in found], crops, {"decode": t1 - t0, "detect": t2 - t1, "align_crop": t3 - t2})


def classify_pending(classifier: Classifier, pending: Sequence[Pending], tta: str | None = None) -> int:
    """Classify the faces of several images in one call per crop spec and fill in each result's faces (the second
    half of :class:`Recognizer`); drops the crops; returns the number of faces."""
    crops = {spec: [c for p in pending for c in p.crops.get(spec, [])] for spec in classifier.crop_specs}
    scores = classifier.predict(crops, tta)
    i = 0
    for p in pending:
        for det in p.detections:
            p.result.faces.append(Face(tuple(int(v) for v in det.box), scores[i], dict(det.landmarks), det.score))
            i += 1
        p.crops = {}
    return n_faces(crops)


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
