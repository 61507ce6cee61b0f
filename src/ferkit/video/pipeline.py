"""A video through the Recognizer's detector and classifier, with tracking, re-identification, smoothing,
summaries and (with an output folder) progressive writers.

Per frame: decode -> (every ``stride``-th frame) detect, else the tracker's predicted boxes -> person ids ->
(on detection frames) crop (the model card's policy) + classify every face in one batch -> smooth per person ->
sinks. Between detection frames each track keeps the scores of its last classification (``classify_every_frame``
classifies the tracker's boxes too). Memory holds a few frames, the tracker's state and a few numbers per person and
per second.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import UserInputError
from ferkit.faces.detection import Detection
from ferkit.video import heap
from ferkit.video import lecture as lecture_view
from ferkit.video.results import FRAME_COLUMNS, GROUPS, FrameResult, PersonFace, VideoResult
from ferkit.video.smoothing import EmaSmoother
from ferkit.video.source import VideoSource
from ferkit.video.summary import GroupSeconds, PeopleSummary, clip_result
from ferkit.video.tracking import FaceTracker, TrackedFace

LIVE_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")
"""Sources read live (newest frame first, dropping the rest) like a camera index."""

DEFAULT_DETECT_FPS = 5.0
"""Detections (and classifications) per second of video when neither stride nor detect_fps is given: faces move
little in 0.2 s, the tracker carries boxes in between and expressions are smoothed over 0.5 s anyway; a new face
gets its id at its second detection, 0.2-0.4 s after the whole-frame scan that finds it (DEFAULT_SCAN_S;
docs/VIDEO.md measures the trade-off)."""

DEFAULT_SCAN_S = 1.0
"""Seconds of video between whole-frame detections (the first detection of each period from the video's start).
In between, a detection looks for each face only around where the detection before found it
(``Detector.detect_near``: a quarter of the cost with 3 faces in a 640x360 frame), and the next detection searches
the whole frame again whenever a face was not found there. A face entering the picture is therefore found within
1 s, not 0.2 s (docs/VIDEO.md)."""

REID_SAMPLES_S = (2.0, 10.0, 60.0)
"""Seconds of detections after a track starts at which its person's descriptor gallery gets another sample (a
descriptor costs ~0.1 s: spaced in time, a few samples cover several poses at a cost per person, not per frame)."""


@dataclass
class VideoOptions:
    """Settings of a video run (all recorded in summary.json).

    stride: detect faces on every ``stride``-th frame (1 = every frame); ``detect_fps``: or this many times per
    second of video (ignored when stride is given). smooth_s: EMA time constant in seconds (0 = off).
    reid_threshold: dlib descriptor distance under which a new track is an earlier person (``reid`` False: every
    track is a new person). lecture: also per-minute rows and low/high moments; aggregate_only: keep no identities
    and write nothing per person (no descriptors are computed at all). classify_every_frame: also classify the
    tracker's boxes between detection frames (default: those frames keep each track's last scores; classification
    then costs per detection, not per frame). scan_s: seconds of video between whole-frame detections; the
    detections in between look only around the faces found by the one before (0: every detection searches the
    whole frame).
    """

    stride: int | None = None
    detect_fps: float | None = None
    max_people: int | None = None
    start: float = 0.0
    end: float | None = None
    smooth_s: float = 0.5
    reid: bool = True
    reid_threshold: float = 0.5
    lost_s: float = 1.0
    lecture: bool = False
    aggregate_only: bool = False
    annotate: bool = True
    classify_every_frame: bool = False
    scan_s: float = DEFAULT_SCAN_S

    def stride_for(self, fps: float) -> int:
        if self.stride is not None:
            if self.stride < 1:
                raise UserInputError(f"--stride must be at least 1, not {self.stride}")
            return self.stride
        rate = self.detect_fps if self.detect_fps is not None else DEFAULT_DETECT_FPS
        if rate <= 0:
            raise UserInputError(f"--fps must be positive, not {rate}")
        return max(1, int(round(fps / rate)))


@dataclass
class _Held:
    """A track's last classification (scores, smoothed scores) and the last detection its landmarks come from."""

    scores: dict[str, float]
    smoothed: dict[str, float]
    detection: Detection


def _moved(det: Detection, box: tuple[int, int, int, int]) -> Detection:
    """The last detection of a track moved to its predicted box: landmarks shifted and scaled with the box, so
    eye-line alignment still applies between detection frames."""
    x0, y0, w0, h0 = det.box
    x1, y1, w1, h1 = box
    sx, sy = w1 / max(w0, 1), h1 / max(h0, 1)
    lms = {k: (x1 + (p[0] - x0) * sx, y1 + (p[1] - y0) * sy) for k, p in det.landmarks.items()}
    return Detection(box, det.score, lms)


class VideoRun:
    """Iterate to get each ``FrameResult``; ``result()`` finishes the video and returns the ``VideoResult``.

    recognizer: a ``ferkit.Recognizer`` (its detector, min_face and classifier are used).
    source: a video path, a camera index (int) or a stream URL. out: a folder for the outputs (None: nothing is
    written). live: read the source as a live stream, dropping frames rather than falling behind (default: for
    camera indexes and stream URLs).
    on_warning: called with one-line messages (e.g. a truncated file).
    """

    def __init__(self, recognizer, source: str | os.PathLike | int, options: VideoOptions | None = None,
                 out: str | os.PathLike | None = None, on_warning: Callable[[str], None] | None = None,
                 snapshot_every_s: float = 5.0, live: bool | None = None) -> None:
        heap.limit_arenas()  # before this run's threads start (ferkit.video.heap says why)
        self.recognizer = recognizer
        self.options = options = options or VideoOptions()
        if options.aggregate_only and not options.lecture:
            options.lecture = True
        if live is None:
            live = isinstance(source, int) or str(source).startswith(LIVE_PREFIXES)
        camera = source if live else None
        self.source = VideoSource(None if camera is not None else source, camera, options.start, options.end)
        self.labels = list(recognizer.labels)
        self.fps = self.source.fps
        self.stride = options.stride_for(self.fps)
        self.out = Path(out) if out is not None else None
        self.on_warning = on_warning
        self.snapshot_every_s = snapshot_every_s
        self.timings: dict[str, float] = defaultdict(float)
        self.frames = 0
        self.error: str | None = None
        self._result: VideoResult | None = None
        self.last_rgb: np.ndarray | None = None
        """The RGB pixels of the frame last yielded (for drawing overlays)."""
        self._snapshots = 0
        self.scans = 0
        """Detections that searched the whole frame (the others looked only around the faces already found)."""
        self._iterator: Iterator[FrameResult] | None = None
        self.tracker = FaceTracker(self.fps, self.stride, options.lost_s)
        self.book = self._identity_book()
        self.smoother = EmaSmoother(options.smooth_s)
        self.people = PeopleSummary(self.labels)
        self._last_time: float | None = None
        self.duration_s = 0.0
        self.group = GroupSeconds(self.labels)

    def _identity_book(self):
        if self.options.aggregate_only:
            return None
        from ferkit.video.reid import FaceDescriber, IdentityBook

        per_second = self.fps / self.stride  # detection frames per second of video
        return IdentityBook(FaceDescriber() if self.options.reid else None, self.options.reid_threshold,
                            samples_at=tuple(max(2, round(s * per_second)) for s in REID_SAMPLES_S))

    # -- settings and results -------------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        s = {k: v for k, v in asdict(self.options).items()}
        s.update(model=self.recognizer.model_name, detector=self.recognizer.detector.name,
                 min_face=self.recognizer.min_face, detect_every_frames=self.stride,
                 source_fps=round(self.fps, 3), width=self.source.width, height=self.source.height)
        return s

    def _video_result(self) -> VideoResult:
        seconds = self.group.rows
        thumbnails = ({pid: f"thumbnails/person_{pid}.jpg" for pid in self.people.ids
                       if self.people.thumbnail(pid) is not None} if self.out else None)
        people = [] if self.options.aggregate_only else self.people.summaries(thumbnails)
        minutes = lecture_view.minutes(seconds, self.labels) if self.options.lecture else []
        moments = lecture_view.moments(seconds) if self.options.lecture else []
        settings = self.settings()
        settings["timings_s"] = {k: round(v, 3) for k, v in self.timings.items()}
        settings["whole_frame_detections"] = self.scans
        if self.book is not None:
            settings["face_descriptors_computed"] = self.book.descriptors_computed
        return VideoResult(self.source.name, self.fps, self.frames, self.duration_s, self.labels, people,
                           seconds, clip_result(seconds, self.labels), settings, minutes, moments, self.error)

    def result(self) -> VideoResult:
        """Process the rest of the video (none after ``close``) and return its VideoResult."""
        for _ in self:
            pass
        return self._result

    def close(self) -> None:
        """Stop here (e.g. after Ctrl-C in the consumer): outputs are closed and written for the frames so far."""
        if self._iterator is not None:
            self._iterator.close()  # runs the loop's finally (outputs closed) when it had started
        self._iterator = iter(())
        if self._result is None:  # never started: nothing was written
            self.source.close()
            self._result = self._video_result()

    # -- the loop -------------------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[FrameResult]:
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    def _detect(self, rgb: np.ndarray, near: list[Detection] | None = None) -> list[Detection]:
        """The faces of a detection frame: the whole frame searched, or only around ``near`` (the faces of the
        detection before)."""
        r = self.recognizer
        found = r.detector.detect(rgb) if near is None else r.detector.detect_near(rgb, [d.box for d in near])
        dets = [d for d in found if min(d.box[2], d.box[3]) >= r.min_face]
        if self.options.max_people is not None:
            dets = sorted(dets, key=lambda d: -d.area)[: self.options.max_people]
        return dets

    def _scheduled(self) -> Iterator[tuple[Any, list[Detection] | None]]:
        """Frames in order, each with its detections (detection frames) or None (the tracker's frames).

        Detection runs in a worker thread one detection step ahead: while it scans frame ``d`` (ONNX Runtime and
        dlib release the GIL), this thread tracks, classifies and writes the frames before ``d`` and decodes the
        ones after it. At most ``stride`` decoded frames wait at a time, so memory stays bounded by the stride, not
        the video. A detection searches the whole frame at the first detection of each ``scan_s`` period of video
        time (periods counted from the video's start, so a Ray segment that starts a period early scans on the
        same frames as one process), and whenever the one before missed a face it looked for; the others look
        only around the faces the one before found.
        """
        from concurrent.futures import ThreadPoolExecutor

        def detect(rgb: np.ndarray, near: list[Detection] | None) -> list[Detection]:
            t = time.perf_counter()
            dets = self._detect(rgb, near)
            self.timings["detect"] += time.perf_counter() - t
            return dets

        frames = iter(self.source)
        waiting = None  # (detection frame, future of its detections, the faces it looked around or None)
        after: list = []  # the frames after it, before the next detection frame
        scanned = None  # the scan period (``floor(time_s / scan_s)``) of the last whole-frame scan
        with ThreadPoolExecutor(1, thread_name_prefix="ferkit-video-detect") as pool:
            n = 0
            while True:
                frame = next(frames, None)
                if frame is not None and n % self.stride:
                    after.append(frame)
                    n += 1
                    continue
                # the step before must end first: this one looks around the faces it found
                found = waiting[1].result() if waiting is not None else None
                if frame is not None:
                    near = None
                    period = math.floor(frame.time_s / self.options.scan_s) if self.options.scan_s > 0 else None
                    if (found and period is not None and period == scanned
                            and (waiting[2] is None or len(found) >= len(waiting[2]))):
                        near = found
                    else:
                        scanned = period
                        self.scans += 1
                    future = pool.submit(detect, frame.rgb, near)
                if waiting is not None:
                    yield waiting[0], found
                    for f in after:
                        yield f, None
                if frame is None:
                    return
                waiting, after = (frame, future, near), []
                n += 1

    def _run(self) -> Iterator[FrameResult]:
        sinks = self._open_sinks()
        last: dict[int, _Held] = {}
        since_detection = 0
        timings = self.timings
        w, h = self.source.width, self.source.height
        try:
            for frame, detections in self._scheduled():
                t2 = time.perf_counter()
                detect_now = detections is not None
                if detect_now:
                    tracked = self.tracker.update(detections, w, h)
                    since_detection = 0
                else:
                    since_detection += 1
                    tracked = self.tracker.predict(since_detection / self.stride, w, h)
                t3 = time.perf_counter()
                timings["track"] += t3 - t2
                persons = self.book.assign(frame.rgb, tracked) if self.book is not None else {}
                t4 = time.perf_counter()
                timings["reid"] += t4 - t3
                faces = self._classify(frame, tracked, persons, last, detect_now)
                t5 = time.perf_counter()
                timings["classify"] += t5 - t4
                result = FrameResult(frame.index, frame.time_s, faces, detect_now)
                self._deliver(result, frame.rgb, sinks)
                yield result
            if self.source.truncated:
                self.error = (f"{self.source.name}: the file ends at frame {self.source.frames_read} of "
                              f"{self.source.frame_count} (truncated?); results cover what was read")
                if self.on_warning:
                    self.on_warning(self.error)
        finally:  # also on Ctrl-C, an exception or a consumer that stopped iterating: close every output validly
            self._finish(sinks)

    def _deliver(self, result: FrameResult, rgb: np.ndarray | None, sinks: dict[str, Any]) -> None:
        """Write one finished frame; every ``snapshot_every_s`` also rewrite the whole-file outputs and trim the
        heap (:mod:`ferkit.video.heap`)."""
        t = time.perf_counter()
        self.frames += 1
        self._write(result, rgb, sinks)
        t_written = time.perf_counter()
        self.timings["write"] += t_written - t
        if time.monotonic() - self._last_snapshot > self.snapshot_every_s:
            if self.out is not None:
                self._snapshot(final=False)
            heap.trim()
            self._last_snapshot = time.monotonic()
            self.timings["summaries"] += time.perf_counter() - t_written
        self.last_rgb = rgb

    def _finish(self, sinks: dict[str, Any]) -> None:
        """Release the source, close every output validly (the group's last, partial second written first), then
        the result and the final snapshot."""
        self.source.close()
        self.timings["decode"] = self.source.decode_seconds
        last_rows = self.group.flush()
        if "seconds" in sinks:
            sinks["seconds"].write(last_rows)
        for sink in sinks.values():
            sink.close()
        if "video" in sinks:
            self.timings["annotate"] += sinks["video"].seconds
        t = time.perf_counter()
        self._result = self._video_result()
        if self.out is not None:
            self._snapshot(final=True)
        self.timings["summaries"] += time.perf_counter() - t

    def _classify(self, frame, tracked: list[TrackedFace], persons: dict[int, int], last: dict[int, _Held],
                  detect_now: bool) -> list[PersonFace]:
        """The faces of one frame with scores: on detection frames (or with ``classify_every_frame``) every face is
        classified in one batch; between them a track keeps its last scores and smoothed scores, its landmarks
        moved with its box. ``last`` holds one entry per track of the last detection frame (bounded by the faces
        in view, not the video)."""
        if detect_now:  # tracks gone from the tracker are dropped here, so ``last`` never outgrows the faces in view
            alive = {t.track_id for t in tracked}
            for gone in [k for k in last if k not in alive]:
                del last[gone]
        dets = []
        todo = []  # indexes of the faces to classify now
        for i, t in enumerate(tracked):
            held = last.get(t.track_id)
            if t.detection is not None:
                dets.append(t.detection)
            else:
                dets.append(_moved(held.detection, t.box) if held is not None else Detection(t.box))
            if detect_now or held is None or self.options.classify_every_frame:
                todo.append(i)
        if not dets:
            return []
        scores = dict(zip(todo, self.recognizer.classify(frame.rgb, [dets[i] for i in todo]) if todo else []))
        faces = []
        for i, (t, d) in enumerate(zip(tracked, dets)):
            person = persons.get(t.track_id)
            held = last.get(t.track_id)
            if i in scores:
                s = scores[i]
                key = person if person is not None else -t.track_id
                smoothed = self.smoother.update(key, frame.time_s, np.array([s[k] for k in self.labels]))
                anchor = t.detection if t.detection is not None or held is None else held.detection
                held = last[t.track_id] = _Held(s, dict(zip(self.labels, map(float, smoothed))), anchor or d)
            faces.append(PersonFace(t.box, held.scores, dict(d.landmarks), d.score, person, held.smoothed,
                                    t.detection is not None))
        return faces

    # -- outputs --------------------------------------------------------------------------------------------------

    def _open_sinks(self) -> dict[str, Any]:
        """The per-frame outputs, opened when a run starts (which also starts the snapshot clock)."""
        from ferkit.video.writers import AnnotatedVideo, CsvSink

        self._last_snapshot = time.monotonic()
        if self.out is None:
            return {}
        self.out.mkdir(parents=True, exist_ok=True)
        sinks: dict[str, Any] = {
            "seconds": CsvSink(self.out / "seconds.csv", ["second", "frames", "faces", *GROUPS, *self.labels])}
        if not self.options.aggregate_only:
            (self.out / "thumbnails").mkdir(exist_ok=True)
            sinks["frames"] = CsvSink(self.out / "frames.csv", FRAME_COLUMNS + self.labels)
            if self.options.annotate:
                sinks["video"] = AnnotatedVideo(self.out / "annotated.mp4", self.fps, self.source.width,
                                                self.source.height)
        return sinks

    def _write(self, result: FrameResult, rgb: np.ndarray, sinks: dict[str, Any]) -> None:
        done = self.group.add(result)
        prev, self._last_time = self._last_time, result.time_s
        dt = 1.0 / self.fps if prev is None or self.source.camera is None else min(result.time_s - prev, 1.0)
        self.duration_s += dt
        if not self.options.aggregate_only:
            self.people.add(result, dt, rgb if self.out is not None else None)
        if not sinks:
            return
        sinks["seconds"].write(done)
        if "frames" in sinks:
            sinks["frames"].write(result.rows(self.labels))
        if "video" in sinks:
            sinks["video"].write(rgb, result)

    def _snapshot(self, final: bool) -> None:
        """Rewrite the whole-file outputs from the state so far (atomically); the timeline and report only at the
        end and every sixth snapshot (30 s), as they redraw and re-embed every image."""
        from ferkit.video import writers
        from ferkit.video.plots import plot_timeline
        from ferkit.video.report import write_report

        result = self._result if final else self._video_result()
        out = self.out
        if not self.options.aggregate_only:
            for pid in self.people.ids:
                thumb = self.people.thumbnail(pid)
                if thumb is not None and (final or not (out / f"thumbnails/person_{pid}.jpg").exists()):
                    writers.write_thumbnail(out / f"thumbnails/person_{pid}.jpg", thumb)
            writers.write_people(out, result.people)
        if self.options.lecture:
            writers.write_csv(out / "minutes.csv", result.minutes,
                              ["minute", "faces", "max_faces", *GROUPS, *self.labels])
        writers.write_json(out / "summary.json", result.to_dict())
        self._snapshots += 1
        if final or self._snapshots % 6 == 1:
            lanes = {} if self.options.aggregate_only else self.people.lanes()
            plot_timeline(out / "timeline.png", lanes, result.seconds, self.labels, result.moments,
                          title=Path(self.source.name).name)
            write_report(out, result)
