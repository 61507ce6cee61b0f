"""`ferkit video --camera N`: a live camera (or stream URL) analysed as it comes.

The source keeps only the newest frame (``VideoSource``), so a slow machine drops frames instead of falling
behind; fps is printed every few seconds; Ctrl-C stops the run and every output is closed and valid (the CSVs are
flushed per frame, annotated.mp4 is a fragmented MP4, the summaries are written in the run's ``finally``), then
the KeyboardInterrupt goes on, so the CLI ends with its one `interrupted` line and status 130. Ctrl-C takes effect
between two frames, never in the middle of one, so every output holds the same frames (a second Ctrl-C stops at
once, e.g. when a stalled camera sends no more frames).
Where a display exists, an overlay window (``ferkit.video.window``, Tk) shows each analysed frame with the same
drawing as annotated.mp4; q, Escape or closing it stops the run like Ctrl-C but as a normal end.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

from ferkit.video.pipeline import VideoOptions, VideoRun
from ferkit.video.results import FrameResult, VideoResult
from ferkit.video.window import OverlayWindow, open_window
from ferkit.video.writers import draw_frame


class _CtrlCBetweenFrames:
    """While active (in the main thread), the first Ctrl-C only sets ``requested``; a second one raises."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _CtrlCBetweenFrames:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def run_camera(camera: int | str, recognizer, out, options: VideoOptions,
               echo: Callable[[str], None] = print, report_every_s: float = 2.0,
               window: bool | OverlayWindow = True,
               on_frame: Callable[[VideoRun, FrameResult], None] | None = None) -> VideoResult:
    """Analyse a live source until it ends, ``options.end`` seconds pass, the window is closed, or Ctrl-C
    (closes the outputs, then re-raises KeyboardInterrupt); returns the VideoResult.

    window: True opens the overlay window where a display exists (headless otherwise), False never does; an
    OverlayWindow is used as given (and closed at the end). on_frame(run, frame) is called after each frame is
    shown.
    """
    run = VideoRun(recognizer, int(camera) if str(camera).isdigit() else camera, options, out, live=True)
    if isinstance(window, OverlayWindow):
        overlay, why = window, ""
    else:
        overlay, why = open_window(f"ferkit - {run.source.name}") if window else (None, "--no-window")
    echo(f"{run.source.name}: {run.source.width}x{run.source.height}, "
         + ("overlay window (q or Esc quits)" if overlay else f"headless ({why})")
         + (f", writing to {out}" if out else "") + "; Ctrl-C stops")
    t0 = last = time.monotonic()
    done_at_last = 0
    interrupted = False
    with _CtrlCBetweenFrames() as ctrl_c:
        try:
            for frame in run:
                now = time.monotonic()
                if now - last >= report_every_s:
                    echo(f"{run.frames} frames, {(run.frames - done_at_last) / (now - last):.1f} fps, "
                         f"{run.source.dropped} dropped, {len(frame.faces)} faces in view")
                    last, done_at_last = now, run.frames
                if overlay is not None and not overlay.show(draw_frame(run.last_rgb, frame)):
                    echo("window closed; closing outputs")
                    break
                if on_frame is not None:
                    on_frame(run, frame)
                if ctrl_c.requested:  # this frame is written everywhere; stop before the next one
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            interrupted = True
            echo("stopped (Ctrl-C); closing outputs")
        finally:
            run.close()
            if overlay is not None:
                overlay.close()
    result = run.result()
    elapsed = time.monotonic() - t0
    echo(f"{run.frames} frames in {elapsed:.1f} s ({run.frames / max(elapsed, 1e-9):.1f} fps), "
         f"{run.source.dropped} dropped")
    if interrupted:
        raise KeyboardInterrupt
    return result
