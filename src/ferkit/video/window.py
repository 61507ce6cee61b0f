"""The live overlay window: each analysed frame with its boxes, person ids and smoothed labels, fps in the title.

ferkit installs opencv-python-headless, whose ``cv2.imshow`` does not exist, so the window is Tk (the standard
library's tkinter) showing frames through Pillow's ImageTk, both already at hand wherever Python has tkinter.
Tk is driven from the processing loop: ``show()`` pastes the frame and calls ``root.update()``, which handles the
window's events (q, Escape, the close button) in the same thread. No GUI thread and no locks are needed, and the
window refreshes exactly as often as frames are analysed, which is all it has to show; between two frames (a
detection, ~0.1 s) it does not react, which a viewer does not notice.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque

import numpy as np

QUIT_KEYS = ("<KeyPress-q>", "<KeyPress-Q>", "<KeyPress-Escape>")


class OverlayWindow:
    """A Tk window showing RGB frames; ``show`` returns False once the user closed it (q, Escape, close button).

    screen: the X display (e.g. ":1"); None uses $DISPLAY. Raises ``tkinter.TclError`` when no window can be
    opened there (see ``open_window``, which turns that into headless mode).
    """

    def __init__(self, title: str = "ferkit", screen: str | None = None) -> None:
        import tkinter

        from PIL import ImageTk

        self._tk, self._image_tk = tkinter, ImageTk
        self.title = title
        self.root = tkinter.Tk(screenName=screen)
        self.root.title(title)
        self.label = tkinter.Label(self.root, borderwidth=0, highlightthickness=0)
        self.label.pack()
        self.closed = False
        self.root.protocol("WM_DELETE_WINDOW", self.close)
        for key in QUIT_KEYS:
            self.root.bind(key, lambda _event: self.close())
        self._photo = None  # ImageTk.PhotoImage; Tk shows nothing once Python drops the reference
        self._max_size = (int(self.root.winfo_screenwidth() * 0.9), int(self.root.winfo_screenheight() * 0.9))
        self._times: deque[float] = deque(maxlen=30)

    @property
    def fps(self) -> float:
        """Frames shown per second over the last 30 (0 before the second frame)."""
        t = self._times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def show(self, rgb: np.ndarray) -> bool:
        """Show ``rgb`` (shrunk to fit the screen), update the title's fps and handle pending events."""
        if self.closed:
            return False
        from PIL import Image

        image = Image.fromarray(rgb)
        scale = min(1.0, self._max_size[0] / image.width, self._max_size[1] / image.height)
        if scale < 1.0:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        if self._photo is None or (self._photo.width(), self._photo.height()) != image.size:
            self._photo = self._image_tk.PhotoImage(image, master=self.root)
            self.label.configure(image=self._photo)
        else:
            self._photo.paste(image)
        self._times.append(time.monotonic())
        try:
            self.root.title(f"{self.title} - {self.fps:.1f} fps (q quits)")
            self.root.update()
        except self._tk.TclError:  # the window was destroyed behind our back (e.g. its display went away)
            self.closed = True
        return not self.closed

    def close(self) -> None:
        """Destroy the window (idempotent); ``show`` returns False from now on."""
        if not self.closed:
            self.closed = True
            try:
                self.root.destroy()
            except self._tk.TclError:
                pass


def open_window(title: str = "ferkit") -> tuple[OverlayWindow | None, str]:
    """An OverlayWindow where a display exists, else None and why (the run goes on headless, without an error)."""
    if sys.platform not in ("win32", "darwin") and not (os.environ.get("DISPLAY")
                                                        or os.environ.get("WAYLAND_DISPLAY")):
        return None, "no display ($DISPLAY and $WAYLAND_DISPLAY are not set)"
    try:
        import tkinter

        from PIL import ImageTk  # noqa: F401 - checks Pillow's Tk support
    except ImportError as exc:
        return None, f"no tkinter ({exc}; on Debian/Ubuntu: apt-get install python3-tk)"
    try:
        return OverlayWindow(title), ""
    except tkinter.TclError as exc:  # e.g. Wayland without XWayland, or an X server that refuses us
        return None, f"cannot open a window: {exc}"
