"""`ferkit video --engine ray`: each video cut into segments that overlap, the segments run in parallel as Ray
tasks (each the single-process pipeline, ``ferkit.video.VideoRun``, on its own stretch of frames), then stitched
back into one stream of frames that the single-process writers turn into the same outputs.

Why segments with an overlap: the tracker, the smoother and re-identification all carry state from frame to frame.
A segment starts ``overlap_s`` before the frames it owns (the warm-up): by its first owned frame, its tracks are
confirmed, its Kalman boxes have converged and each person's moving average has forgotten that it started
cold (``exp(-overlap / smooth)``: 2 s against the default 0.5 s leaves 2%); the warm-up is at least a whole-frame
scan period (``VideoOptions.scan_s``, 1 s), so that a segment's detections after its first scan are one process's.
The warm-up frames are used only to match people: a person of segment k whose boxes coincide (IoU >= 0.5) with a
person of segment k-1 on the same warm-up frames is that person; a person seen only after the warm-up takes the id
of the closest earlier person by dlib face descriptors (the single-process re-identification rule and threshold),
else a new id. New ids are numbered in order of first appearance, as a single process numbers them. Segment
boundaries fall on detection frames (multiples of the stride from ``--start``), so every segment detects faces on
exactly the frames a single process would.

Why the driver re-renders annotated.mp4 (rather than stitching encoded parts): labels and ids are known only after
stitching, and one sequential decode + draw + encode is simple and correct; it is the serial part of a run
(docs/SCALING.md measures it). Segments hold no pixels: a task returns per-frame results and descriptors only.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import FerkitError, UserInputError
from ferkit.faces.boxes import corners, iou_matrix
from ferkit.scale.cluster import ray_session
from ferkit.recognizer import Recognizer
from ferkit.video.pipeline import VideoOptions, VideoRun
from ferkit.video.results import FrameResult
from ferkit.video.run import VideosSummary, _out_dirs
from ferkit.video.source import VideoSource, iter_video_paths

DEFAULT_SEGMENT_S = 60.0
"""Seconds of video per task: long enough that the warm-up (``DEFAULT_OVERLAP_S``) costs ~3% more work, short
enough that an hour of video keeps 60 workers busy."""

DEFAULT_OVERLAP_S = 2.0
"""Warm-up seconds before each segment: 4 smoothing time constants (0.5 s), 2x the tracker's memory (1 s), 10
detection steps at the default 5 detections per second."""

IOU_SAME = 0.5
"""Boxes of two segments on the same warm-up frame that overlap this much are the same face."""

WHAT = "ferkit video --engine ray"


@dataclass(frozen=True)
class Segment:
    """Frames [``read_start``, ``own_end``) of a video are processed; [``own_start``, ``own_end``) are its output,
    the ones before are the warm-up. ``start_s``/``end_s``: the same range as ``VideoOptions`` start/end."""

    index: int
    read_start: int
    own_start: int
    own_end: int
    start_s: float
    end_s: float | None


def check_segments(segment_s: float, overlap_s: float) -> None:
    if segment_s <= 0:
        raise UserInputError(f"--segment-seconds must be positive, not {segment_s}")
    if overlap_s < 0:
        raise UserInputError(f"--overlap-seconds must be 0 or more, not {overlap_s}")


def plan_segments(first: int, last: int, fps: float, stride: int, segment_s: float = DEFAULT_SEGMENT_S,
                  overlap_s: float = DEFAULT_OVERLAP_S, end_s: float | None = None) -> list[Segment]:
    """Segments covering frames [first, last): boundaries and warm-ups whole detection steps from ``first``."""
    check_segments(segment_s, overlap_s)
    length = max(stride, int(round(segment_s * fps / stride)) * stride)
    overlap = int(math.ceil(overlap_s * fps / stride)) * stride
    out = []
    for i, own_start in enumerate(range(first, last, length)):
        own_end = min(own_start + length, last)
        read_start = max(first, own_start - overlap)
        # end a half frame early: VideoSource reads up to ceil(end * fps), exactly own_end despite rounding
        out.append(Segment(i, read_start, own_start, own_end, read_start / fps,
                           end_s if own_end == last else (own_end - 0.5) / fps))
    return out


# -- one segment, on a worker ---------------------------------------------------------------------------------------

@dataclass
class SegmentResult:
    """What a task sends back: every frame it processed (warm-up included), each person's descriptors, and the
    counters summed into the video's summary. ``error``: a one-line input error; ``truncated``: the file ended
    before the segment did."""

    frames: list[FrameResult] = field(default_factory=list)
    galleries: dict[int, list[np.ndarray]] = field(default_factory=dict)
    descriptors_computed: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    error: str | None = None


@functools.lru_cache(maxsize=2)
def _recognizer(model: str, detector: str, min_face: int, tta: str):
    """One Recognizer per worker process and settings: Ray reuses a worker for many tasks, so the model and the
    detector load once per worker, not once per segment. Built as ``ferkit video`` builds its own (one ONNX thread
    for the classifier and for MTCNN), which also fits a task's one CPU of the cluster."""
    return Recognizer.for_video(model, detector, min_face=min_face, tta=tta)


def run_segment(path: str, spec: dict[str, Any], options: VideoOptions, segment: Segment) -> SegmentResult:
    """The single-process pipeline on one segment (no outputs written). A bad input is returned as its line."""
    try:
        run = VideoRun(_recognizer(**spec), path, replace(options, start=segment.start_s, end=segment.end_s,
                                                          annotate=False))
        frames = list(run)
    except FerkitError as exc:
        return SegmentResult(error=str(exc))
    book = run.book
    return SegmentResult(frames, book.galleries() if book is not None else {},
                         book.descriptors_computed if book is not None else 0, dict(run.timings),
                         run.source.truncated)


# -- stitching, on the driver --------------------------------------------------------------------------------------

class Stitcher:
    """Segment-local person ids -> the video's person ids, segment after segment (in order).

    threshold: the descriptor distance under which a person is an earlier one (``VideoOptions.reid_threshold``).
    Memory: each person's descriptors (at most ``max_gallery``) and the previous segment's boxes.
    """

    def __init__(self, threshold: float, max_gallery: int = 32) -> None:
        self.threshold = threshold
        self.max_gallery = max_gallery
        self._gallery: dict[int, list[np.ndarray]] = {}
        self._previous: dict[int, list[tuple[tuple[int, int, int, int], int]]] = {}  # frame -> (box, person)
        self._next_id = 1

    @property
    def people(self) -> int:
        return self._next_id - 1

    def add(self, segment: Segment, result: SegmentResult) -> list[FrameResult]:
        """The segment's own frames with the video's person ids."""
        warm = [f for f in result.frames if f.index < segment.own_start]
        own = [f for f in result.frames if f.index >= segment.own_start]
        mapping = self._by_boxes(warm)
        self._by_descriptors(own, mapping, result.galleries)
        out = []
        for f in own:
            faces = []
            for face in f.faces:
                if face.person is not None:
                    if face.person not in mapping:  # a new person, numbered in order of first appearance
                        mapping[face.person] = self._next_id
                        self._next_id += 1
                    face = replace(face, person=mapping[face.person])
                faces.append(face)
            out.append(FrameResult(f.index, f.time_s, faces, f.detected))
        for local, person in mapping.items():
            gallery = self._gallery.setdefault(person, [])
            gallery.extend(result.galleries.get(local, [])[: self.max_gallery - len(gallery)])
        self._previous = {f.index: [(face.box, face.person) for face in f.faces if face.person is not None]
                          for f in out}
        return out

    def _by_boxes(self, warm: list[FrameResult]) -> dict[int, int]:
        """Local person -> person of the previous segment, by the warm-up frames on which their boxes coincide
        (most such frames first; one-to-one)."""
        votes: Counter = Counter()
        for f in warm:
            before = self._previous.get(f.index, [])
            faces = [face for face in f.faces if face.person is not None]
            if not faces or not before:
                continue
            overlap = iou_matrix(corners(face.box for face in faces), corners(box for box, _ in before))
            for face, row in zip(faces, overlap):
                if row.max() >= IOU_SAME:
                    votes[face.person, before[int(row.argmax())][1]] += 1
        mapping: dict[int, int] = {}
        for (local, person), _ in votes.most_common():
            if local not in mapping and person not in mapping.values():
                mapping[local] = person
        return mapping

    def _by_descriptors(self, own: list[FrameResult], mapping: dict[int, int],
                        galleries: dict[int, list[np.ndarray]]) -> None:
        """People first seen after the warm-up take the closest earlier person not already in this segment, when
        closer than the threshold (the single-process rule)."""
        seen: list[int] = []
        for f in own:
            seen.extend(face.person for face in f.faces if face.person is not None and face.person not in seen)
        for local in seen:
            mine = galleries.get(local)
            if local in mapping or not mine:
                continue
            taken = set(mapping.values())
            best, best_d = None, self.threshold
            for person, theirs in self._gallery.items():
                if person in taken or not theirs:
                    continue
                d = min(float(np.linalg.norm(a - b)) for a in mine for b in theirs)
                if d < best_d:
                    best, best_d = person, d
            if best is not None:
                mapping[local] = best


# -- one video on the driver: stitched frames through the single-process writers ------------------------------------

class StitchedRun(VideoRun):
    """A ``VideoRun`` whose frames come from stitched segments instead of its own detector and tracker: the same
    summaries, writers, snapshots and result as a single-process run. ``next_segment()`` returns the next
    (Segment, SegmentResult) in order, or None after the last."""

    def __init__(self, recognizer, path: Path, options: VideoOptions, out: Path | None,
                 next_segment: Callable[[], tuple[Segment, SegmentResult] | None], extra: dict[str, Any]) -> None:
        self._next_segment = next_segment
        self._extra = extra
        self._descriptors = 0
        self._stitcher = Stitcher(options.reid_threshold)
        super().__init__(recognizer, path, options, out, live=False)

    def _identity_book(self):
        return None  # identities come from the segments' books, through the stitcher

    def settings(self) -> dict[str, Any]:
        s = super().settings()
        s.update(self._extra)
        if not self.options.aggregate_only:
            s["face_descriptors_computed"] = self._descriptors
        return s

    def _stitched(self) -> Iterator[FrameResult]:
        while (item := self._next_segment()) is not None:
            segment, result = item
            if result.error:
                self.error = result.error
                return
            self._descriptors += result.descriptors_computed
            for k, v in result.timings.items():  # CPU-seconds summed over the workers
                self.timings[f"workers_{k}"] += v
            frames = self._stitcher.add(segment, result)
            yield from frames
            if result.truncated:
                read = (frames[-1].index + 1 if frames else segment.own_start) - int(round(self.options.start
                                                                                           * self.fps))
                self.error = (f"{self.source.name}: the file ends at frame {read} of {self.source.frame_count} "
                              "(truncated?); results cover what was read")
                return

    def _run(self) -> Iterator[FrameResult]:
        sinks = self._open_sinks()
        decoded = iter(self.source) if self.out is not None else None  # pixels for annotated.mp4 and thumbnails
        try:
            for result in self._stitched():
                rgb = None
                if decoded is not None:
                    frame = next(decoded, None)
                    while frame is not None and frame.index < result.index:
                        frame = next(decoded, None)
                    if frame is None or frame.index != result.index:
                        break  # the driver cannot read what a worker read: keep what was written
                    rgb = frame.rgb
                self._deliver(result, rgb, sinks)
                yield result
        finally:
            self._finish(sinks)


# -- several videos -------------------------------------------------------------------------------------------------

def _probe(path: Path, options: VideoOptions) -> tuple[float, int, int, int]:
    """fps, stride, first and last frame of the range to analyze; a bad file raises its one line."""
    with VideoSource(path, start=options.start, end=options.end) as source:
        fps, count = source.fps, source.frame_count
    first = int(round(options.start * fps))
    last = count if options.end is None else min(count, int(math.ceil(options.end * fps)))
    return fps, options.stride_for(fps), first, last


def run_videos_on_ray(paths: list[str | os.PathLike], recognizer, spec: dict[str, Any], out: str | os.PathLike | None,
                      options: VideoOptions, segment_s: float = DEFAULT_SEGMENT_S,
                      overlap_s: float = DEFAULT_OVERLAP_S, address: str | None = None,
                      num_cpus: int | None = None, on_error: Callable[[str], None] | None = None,
                      progress: bool = True) -> VideosSummary:
    """``ferkit video`` on a Ray cluster: every video's segments as tasks, stitched in order on this process.

    recognizer: this process's Recognizer (its labels and names for the outputs); spec: its settings (model,
    detector, min_face, tta), from which each worker builds its own once. Videos must be on a
    path every node reads (a shared filesystem). A bad video costs its one line (``on_error``), never the others.
    At most two tasks per cluster CPU are queued ahead of the video being stitched, so the results waiting in Ray's
    object store stay bounded however many videos are given.
    """
    from tqdm import tqdm

    summary = VideosSummary()

    def fail(message: str) -> None:
        summary.failed.append(message)
        if on_error:
            on_error(message)

    def ignored(p: Path) -> None:
        summary.ignored.append(str(p))
        if on_error:
            on_error(f"ignored {p}: not a video file")

    check_segments(segment_s, overlap_s)  # before any cluster starts
    files = list(iter_video_paths(paths, on_ignored=ignored))
    targets = _out_dirs(files, Path(out) if out is not None else None)
    t0 = time.perf_counter()
    with ray_session(address, WHAT, num_cpus=num_cpus) as ray:
        task = ray.remote(num_cpus=1)(run_segment)
        planned: list[tuple[Path, Path | None, list[Segment]]] = []
        for path, target in zip(files, targets):
            try:
                fps, stride, first, last = _probe(path, options)
            except FerkitError as exc:
                fail(str(exc))
                continue
            # a warm-up of at least a scan period holds a whole-frame scan, after which a segment's detections
            # are one process's (VideoOptions.scan_s)
            warm_up = max(overlap_s, options.scan_s)
            planned.append((path, target, plan_segments(first, last, fps, stride, segment_s, warm_up, options.end)))
        queue = deque((str(path), seg) for path, _, segments in planned for seg in segments)
        submitted: dict[tuple[str, int], Any] = {}
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))

        def top_up() -> None:
            while queue and len(submitted) < window:
                path, seg = queue.popleft()
                submitted[path, seg.index] = task.remote(path, spec, options, seg)

        def discard(path: str) -> None:
            """Drop a finished video's segments that are left (after its truncation or error)."""
            for key in [k for k in submitted if k[0] == path]:
                ray.cancel(submitted.pop(key))
            for item in [item for item in queue if item[0] == path]:
                queue.remove(item)

        top_up()
        for path, target, segments in planned:
            pending = deque(segments)

            def next_segment(path: str = str(path), pending: deque = pending):
                if not pending:
                    return None
                seg = pending.popleft()
                top_up()
                return seg, ray.get(submitted.pop((path, seg.index)))

            extra = {"engine": "ray", "segments": len(segments), "segment_s": segment_s, "overlap_s": overlap_s}
            run = StitchedRun(recognizer, path, replace(options), target, next_segment, extra)
            bar = tqdm(total=segments[-1].own_end - segments[0].own_start, disable=not progress,
                       desc=path.name[:30], unit="frame", leave=False)
            lost = None
            try:
                for _ in run:
                    bar.update(1)
            except ray.exceptions.RayError as exc:  # a worker or node lost: this video's line, the others go on
                if isinstance(exc, ray.exceptions.RayTaskError):
                    raise  # an exception raised inside a task is a bug: its traceback, not a line
                lost = f"{path}: a segment failed on the cluster ({str(exc).strip().splitlines()[-1]})"
            bar.close()
            discard(str(path))
            top_up()
            result = run.result()
            summary.results.append(result)
            summary.frames += result.frames
            if lost or result.error:
                fail(lost or result.error)
    summary.seconds = time.perf_counter() - t0
    return summary
