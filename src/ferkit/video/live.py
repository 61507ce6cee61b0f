"""`ferkit video --camera N`: a live camera (or stream URL) analysed as it comes.

The source keeps only the newest frame (``VideoSource``), so a slow machine drops frames instead of falling
behind; fps is printed every few seconds; Ctrl-C stops the run and every output is closed and valid (the CSVs are
flushed per frame, annotated.mp4 is a fragmented MP4, the summaries are written in the run's ``finally``), then
the KeyboardInterrupt goes on, so the CLI ends with its one `interrupted` line and status 130.
Where a display exists, an overlay window (``ferkit.video.window``, Tk) shows each analysed frame with the same
drawing as annotated.mp4; q, Escape or closing it stops the run like Ctrl-C but as a normal end.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ferkit.video.pipeline import VideoOptions, VideoRun
from ferkit.video.results import FrameResult, VideoResult
from ferkit.video.window import OverlayWindow, open_window
from ferkit.video.writers import draw_frame


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
