"""`ferkit video --camera N`: a live camera (or stream URL) analysed as it comes.

The source keeps only the newest frame (``VideoSource``), so a slow machine drops frames instead of falling
behind; fps is printed every few seconds; Ctrl-C stops the run and every output is closed and valid (the CSVs are
flushed per frame, annotated.mp4 is a fragmented MP4, the summaries are written in the run's ``finally``).
An overlay window is shown only where OpenCV has a GUI and a display exists: ferkit installs
opencv-python-headless, which has none, so by default the run is headless and ``--out`` holds the results.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from ferkit.video.pipeline import VideoOptions, VideoRun
from ferkit.video.results import VideoResult
from ferkit.video.writers import draw_frame


def _window_available() -> bool:
    if os.name != "nt" and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return False
    import cv2

    try:
        cv2.namedWindow("ferkit")
        return True
    except cv2.error:  # a headless OpenCV build
        return False


def run_camera(camera: int | str, recognizer, out, options: VideoOptions,
               echo: Callable[[str], None] = print, report_every_s: float = 2.0) -> VideoResult:
    """Analyse a live source until it ends, ``options.end`` seconds pass, or Ctrl-C; returns the VideoResult."""
    run = VideoRun(recognizer, int(camera) if str(camera).isdigit() else camera, options, out, live=True)
    window = _window_available()
    echo(f"{run.source.name}: {run.source.width}x{run.source.height}, "
         + ("overlay window (q quits)" if window else "headless (no display or no OpenCV GUI)")
         + (f", writing to {out}" if out else "") + "; Ctrl-C stops")
    t0 = last = time.monotonic()
    done_at_last = 0
    try:
        for frame in run:
            now = time.monotonic()
            if now - last >= report_every_s:
                echo(f"{run.frames} frames, {(run.frames - done_at_last) / (now - last):.1f} fps, "
                     f"{run.source.dropped} dropped, {len(frame.faces)} faces in view")
                last, done_at_last = now, run.frames
            if window:
                import cv2

                cv2.imshow("ferkit", cv2.cvtColor(draw_frame(run.last_rgb, frame), cv2.COLOR_RGB2BGR))
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
    except KeyboardInterrupt:
        echo("stopped (Ctrl-C); closing outputs")
    finally:
        run.close()
        if window:
            import cv2

            cv2.destroyAllWindows()
    result = run.result()
    elapsed = time.monotonic() - t0
    echo(f"{run.frames} frames in {elapsed:.1f} s ({run.frames / max(elapsed, 1e-9):.1f} fps), "
         f"{run.source.dropped} dropped")
    return result
