"""Frames from a video file or a camera, decoded one at a time (OpenCV), never all held in memory.

Every way a source can be bad ends in one ``UserInputError`` line naming it: missing file, not a video, a codec
OpenCV cannot decode, a zero-frame file, a camera that does not exist. A file that ends before the frame count
in its header (truncated mid-frame) is not an error while reading: ``VideoSource.truncated`` says so afterwards,
so the frames read so far still count.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ferkit.errors import UserInputError
from ferkit.io import VIDEO_EXTENSIONS, is_video_path

__all__ = ["Frame", "VideoSource", "VIDEO_EXTENSIONS", "iter_video_paths"]

READ_AHEAD = 4
"""Decoded frames a file's reader thread may hold ahead of the pipeline."""


@dataclass
class Frame:
    """One decoded frame: its index in the source, its time in seconds and the RGB pixels."""

    index: int
    time_s: float
    rgb: np.ndarray


def _quiet_capture(*args) -> cv2.VideoCapture:
    """cv2.VideoCapture without OpenCV's own log lines on stderr (ferkit prints one line of its own instead)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(*args)
    finally:
        cv2.utils.logging.setLogLevel(level)


def _probe_codec(path: Path) -> str | None:
    """The video codec PyAV (FFmpeg) reads from the container, when OpenCV cannot open a file: tells an unknown
    codec apart from a file that is not a video at all. None when PyAV is absent or finds no video stream."""
    try:
        import av
    except ImportError:
        return None
    import av.logging

    level = av.logging.get_level()
    av.logging.set_level(-8)  # AV_LOG_QUIET: FFmpeg's own complaints; ferkit prints one line of its own
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0] if container.streams.video else None
            if stream is None:
                return None
            context = stream.codec_context  # None when FFmpeg has no decoder for the stream's codec
            return context.name if context is not None and context.name else ""
    except Exception:  # noqa: BLE001 - any failure to probe means: not a video we know
        return None
    finally:
        av.logging.set_level(level)


def _fourcc(cap: cv2.VideoCapture) -> str:
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() and text.strip() else f"0x{code:08x}"


class VideoSource:
    """An opened video file (``path``) or live source (``camera``: a device index, or a stream URL such as
    rtsp://...) that yields ``Frame``s.

    start/end: seconds of the file to read (``end`` None = to the end). A live source is read by a thread that
    keeps only the newest frame, so a consumer slower than the camera gets the latest frame and the ones in between
    are dropped (counted in ``dropped``) instead of queueing up; ``time_s`` is wall-clock time since the first
    frame, ``end`` a duration, and ``frame_count`` is None.
    """

    def __init__(self, path: str | os.PathLike | None = None, camera: int | str | None = None, start: float = 0.0,
                 end: float | None = None) -> None:
        if (path is None) == (camera is None):
            raise ValueError("give exactly one of path and camera")
        if end is not None and end <= start:
            raise UserInputError(f"--end ({end}) must be after --start ({start})")
        self.camera = camera
        self.name = str(path) if camera is None else f"camera {camera}" if str(camera).isdigit() else str(camera)
        self.start, self.end = start, end
        self.frames_read = 0
        self.dropped = 0
        self.truncated = False
        self.decode_seconds = 0.0
        """Wall seconds a file's reader thread spent decoding (a per-stage timing)."""
        self._stop = threading.Event()  # tells a live source's reader thread to end (``close``)
        self._reader: threading.Thread | None = None
        if camera is not None:
            self._cap = _quiet_capture(int(camera) if str(camera).isdigit() else str(camera))
            if not self._cap.isOpened():
                raise UserInputError(f"camera {camera}: no such camera or stream (or it is in use); list devices "
                                     "with `ls /dev/video*` on Linux and pass another --camera index")
            self.fps = self._cap.get(cv2.CAP_PROP_FPS) or 30.0
            self.frame_count: int | None = None
        else:
            self._cap = self._open_file(Path(path))
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def _open_file(self, path: Path) -> cv2.VideoCapture:
        name = str(path)
        if not path.exists():
            raise UserInputError(f"{name}: no such file")
        if path.is_dir():
            raise UserInputError(f"{name}: is a folder (give the folder to `ferkit video` to process its videos)")
        if path.stat().st_size == 0:
            raise UserInputError(f"{name}: empty file (0 bytes)")
        cap = _quiet_capture(name, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            codec = _probe_codec(path)
            if codec is not None:
                raise UserInputError(f"{name}: cannot decode its video ({f'codec {codec}' if codec else 'a codec FFmpeg does not know'}); convert it, e.g. "
                                     f"`ffmpeg -i {path.name} -c:v libx264 out.mp4`")
            raise UserInputError(f"{name}: not a video (or a corrupt one): OpenCV cannot open it")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        if count <= 0:
            cap.release()
            raise UserInputError(f"{name}: the video has no frames")
        self.fps = fps if fps and math.isfinite(fps) and fps > 0 else 30.0
        self.frame_count = count
        ok, first = cap.read()
        if not ok or first is None:
            codec = _fourcc(cap)
            cap.release()
            raise UserInputError(f"{name}: cannot decode its frames (codec {codec}); convert it, e.g. "
                                 f"`ffmpeg -i {path.name} -c:v libx264 out.mp4`")
        # rewind to the start time (decoding the first frame above was the codec check)
        first_index = int(round(self.start * self.fps))
        if first_index >= count:
            cap.release()
            raise UserInputError(f"{name}: --start {self.start} s is past the end ({count / self.fps:.1f} s)")
        cap.set(cv2.CAP_PROP_POS_FRAMES, first_index)
        self._next_index = first_index
        return cap

    @property
    def duration_s(self) -> float | None:
        return None if self.frame_count is None else self.frame_count / self.fps

    def __iter__(self) -> Iterator[Frame]:
        if self.camera is not None:
            yield from self._camera_frames()
            return
        yield from self._file_frames()

    def _file_frames(self) -> Iterator[Frame]:
        """A file's frames, decoded and converted to RGB by a reader thread at most READ_AHEAD frames ahead.

        Why a thread: OpenCV releases Python's lock while it decodes, so decoding (2-4 ms a 640x360-720x480 frame
        here) overlaps the pipeline's own work instead of adding to it; the pipeline's thread was the busiest of a
        run. The queue bounds memory to a few frames whatever the video's length.
        """
        last = self.frame_count if self.end is None else min(self.frame_count, int(math.ceil(self.end * self.fps)))
        ahead: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        failed: list[BaseException] = []

        def put(item: Frame | None) -> bool:
            while not self._stop.is_set():
                try:
                    ahead.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            index = self._next_index
            try:
                while index < last:
                    t = time.perf_counter()
                    ok, bgr = self._cap.read()
                    if not ok or bgr is None:
                        # the header promised more frames than the file holds: cut short (e.g. a copy that stopped).
                        # Counts of some containers (mkv, webm) are estimates from the duration, hence the tolerance.
                        self.truncated = last - index > max(2, 0.02 * self.frame_count)
                        break
                    frame = Frame(index, index / self.fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                    self.decode_seconds += time.perf_counter() - t
                    if not put(frame):
                        return
                    index += 1
            except BaseException as exc:  # noqa: BLE001 - raised again in the consumer's thread
                failed.append(exc)
            put(None)

        self._reader = threading.Thread(target=read, name="ferkit-video-read", daemon=True)
        self._reader.start()
        try:
            while (frame := ahead.get()) is not None:
                self.frames_read += 1
                yield frame
            if failed:
                raise failed[0]
        finally:
            self._stop_reader()

    def _camera_frames(self) -> Iterator[Frame]:
        slot: list = [None]  # (index, time, bgr) of the newest frame not yet taken
        fresh = threading.Condition()
        t0 = time.monotonic()

        def grab() -> None:
            index = 0
            while not self._stop.is_set():
                ok, bgr = self._cap.read()
                with fresh:
                    if slot[0] is not None:  # the consumer has not taken the previous frame: it is dropped
                        self.dropped += 1
                    slot[0] = (index, time.monotonic() - t0, bgr) if ok and bgr is not None else "end"
                    fresh.notify()
                    if slot[0] == "end":
                        return
                index += 1

        self._reader = threading.Thread(target=grab, name="ferkit-camera", daemon=True)
        self._reader.start()
        try:
            while True:
                with fresh:
                    while slot[0] is None:
                        fresh.wait()
                    item, slot[0] = slot[0], None
                if item == "end" or (self.end is not None and item[1] > self.end):
                    break
                self.frames_read += 1
                t = time.perf_counter()
                rgb = cv2.cvtColor(item[2], cv2.COLOR_BGR2RGB)
                self.decode_seconds += time.perf_counter() - t  # the read itself waits for the camera
                yield Frame(item[0], item[1], rgb)
        finally:
            self._stop_reader()

    def _stop_reader(self) -> bool:
        """Stop a live source's reader thread; False if it is still stuck in a read (a stalled stream)."""
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=2)
            return not self._reader.is_alive()
        return True

    def close(self) -> None:
        """Release the capture, after the reader thread has stopped: releasing it in the middle of the thread's
        read (a consumer that stopped early, Ctrl-C) can crash OpenCV. A reader stuck in a stalled stream keeps
        its capture; the daemon thread ends with the process."""
        if self._stop_reader():
            self._cap.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_video_paths(paths: Iterable[str | os.PathLike], on_ignored=None) -> Iterator[Path]:
    """Files as given; folders expanded recursively to their video files (sorted). ``on_ignored(path)`` is called
    for each other file found in a folder, so the caller can say it was left out."""
    for p in map(Path, paths):
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                for fn in sorted(filenames):
                    f = Path(dirpath) / fn
                    if is_video_path(f):
                        yield f
                    elif on_ignored is not None and not fn.startswith("."):
                        on_ignored(f)
        else:
            yield p
