"""Live mode (`ferkit video --camera`) end to end: the overlay window on a real X server (Xvfb) shows each analysed
frame with its boxes and stops on q; without a display the run is headless; Ctrl-C closes every output validly.

A video file given to --camera is read like a camera (newest frame only, the rest dropped), at decoding speed; the
clip is 1280x720 so decoding it takes a few seconds, long enough to look at the window or press Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ferkit.io import read_image
from tests.conftest import PHOTOS, need
from tests.video_clips import count_frames, read_csv, window, write_video

pytest.importorskip("supervision", reason="needs the video extra: pip install -e '.[video]'")

CLIP_FRAMES = 600


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """20 s at 30 fps of one real person (a slow drift across a portrait), 1280x720 MJPG."""
    photo = read_image(need(PHOTOS) / "dlib__Tom_Cruise_avp_2014_4.jpg")
    frames = (window(photo, 0.5 + i / 12000, 0.5, 0.6, (1280, 720)) for i in range(CLIP_FRAMES))
    return write_video(tmp_path_factory.mktemp("live") / "camera.avi", frames, fps=30)


@pytest.fixture(scope="module")
def recognizer():
    from ferkit.recognizer import Recognizer

    return Recognizer(workers=1)


@pytest.fixture(scope="module")
def display():
    """A real X server (Xvfb, black background, big enough for the 1280x720 clip unscaled) on a free display
    number; yields ":N"."""
    pytest.importorskip("tkinter", reason="needs tkinter for the overlay window (Debian/Ubuntu: apt-get install "
                                          "python3-tk)")
    if shutil.which("Xvfb") is None:
        pytest.skip("needs Xvfb for a real X server (Debian/Ubuntu: apt-get install xvfb; .ci/run installs it)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1600x900x24", "-br",
                             "-nolisten", "tcp"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as f:
            number = f.readline().strip().decode()  # Xvfb writes its display number once it accepts clients
        assert number, "Xvfb did not start"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)



def test_window_opens_only_where_a_display_exists(display, monkeypatch):
    from ferkit.video.window import open_window

    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    assert open_window() == (None, "no display ($DISPLAY and $WAYLAND_DISPLAY are not set)")
    monkeypatch.setenv("DISPLAY", ":31999")  # no X server there
    win, why = open_window()
    assert win is None and why.startswith("cannot open a window: couldn't connect to display")
    monkeypatch.setenv("DISPLAY", display)
    win, why = open_window("title")
    assert win is not None and why == "" and win.root.title() == "title"
    win.close()
    assert win.closed and not win.show(np.zeros((4, 4, 3), np.uint8))


def test_the_window_shows_each_analysed_frame_and_q_stops_the_run(display, clip, recognizer, tmp_path):
    """A screenshot of the X screen holds exactly the frame annotated.mp4 gets (boxes, ids, labels); q ends the
    run after the next frame with every output written."""
    from PIL import ImageGrab

    from ferkit.annotate import GROUP_COLOURS
    from ferkit.video import VideoOptions
    from ferkit.video.live import run_camera
    from ferkit.video.window import OverlayWindow
    from ferkit.video.writers import draw_frame

    win = OverlayWindow("ferkit test", screen=display)
    shown: dict = {}

    def on_frame(run, frame) -> None:
        if not frame.faces or shown:
            return
        drawn = draw_frame(run.last_rgb, frame)
        screen = np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB"))
        x, y = win.label.winfo_rootx(), win.label.winfo_rooty()
        h, w = drawn.shape[:2]
        crop = screen[y:y + h, x:x + w].astype(int)
        if crop.shape == drawn.shape and np.abs(crop - drawn).mean() < 1.0:  # painted (the first may not be yet)
            shown.update(screen=screen, crop=crop, frame=frame, at=run.frames, where=(x, y, w, h))
            win.label.focus_force()
            win.root.update()
            win.root.event_generate("<KeyPress-q>", when="tail")

    messages: list[str] = []
    video = run_camera(str(clip), recognizer, tmp_path, VideoOptions(), echo=messages.append, window=win,
                       on_frame=on_frame)
    assert "overlay window" in messages[0]
    assert shown, f"the window never showed a frame with a face ({video.frames} frames analysed)"
    x, y, w, h = shown["where"]
    screen, crop = shown["screen"], shown["crop"]
    assert (crop.sum(axis=2) > 0).mean() > 0.95  # the window shows the frame...
    outside = np.ones(screen.shape[:2], bool)
    outside[y:y + h, x:x + w] = False
    assert (screen[outside].sum(axis=1) == 0).mean() > 0.95  # ...on Xvfb's black screen
    colour = GROUP_COLOURS[shown["frame"].faces[0].smoothed_group]
    assert (crop == colour).all(axis=2).sum() > 200  # the face's box and label background

    assert "window closed; closing outputs" in messages and win.closed
    assert video.frames == shown["at"] + 1  # q was handled at the next frame
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == video.frames and len(video.people) == 1
    assert read_csv(tmp_path / "frames.csv") and count_frames(tmp_path / "annotated.mp4") == video.frames


def test_ctrl_c_closes_every_output_validly(clip, tmp_path):
    """SIGINT to a real `ferkit video --camera CLIP --out DIR` once it writes rows: status 130, one `interrupted`
    line, no traceback, and frames.csv, summary.json, people.json and annotated.mp4 all complete."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.Popen([sys.executable, "-m", "ferkit.cli", "video", "--camera", str(clip), "--out", str(out),
                             "--no-window"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "frames.csv").exists() and len((out / "frames.csv").read_text().splitlines()) > 5:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "headless (--no-window)" in stderr and "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if "interrupted" in line] == ["ferkit: interrupted"]
    assert "stopped (Ctrl-C); closing outputs" in stderr
    assert re.search(r"\d+ frames in [\d.]+ s \([\d.]+ fps\), \d+ dropped", stderr)  # the fps line
    rows = read_csv(out / "frames.csv")
    assert len(rows) >= 5 and all(r["neutral"] != "" for r in rows)  # complete rows only
    summary = json.loads((out / "summary.json").read_text())
    people = json.loads((out / "people.json").read_text())
    assert 0 < summary["frames"] < CLIP_FRAMES and people and all(p["seconds"] > 0 for p in people)
    assert len({r["frame"] for r in rows}) <= summary["frames"]
    assert count_frames(out / "annotated.mp4") == summary["frames"]  # closed: every analysed frame is in it
