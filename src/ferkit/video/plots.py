"""timeline.png: one lane per person (their smoothed emotion each second) above the group's positive / neutral /
negative shares per second and the number of faces in view; the lecture view's low and high moments are shaded.

Drawn as a raster with NumPy and Pillow, not matplotlib. Why: a run redraws the timeline every 30 s, and a
matplotlib figure cost ~0.2 s of a 10 s clip's 3 s and kept ~28 MB (its modules, font cache and renderer) in a
process whose memory is otherwise flat with video length (docs/DESIGN.md). Here each pixel column of the plot
shows the seconds it covers, so drawing costs the same time and memory for a 10-second clip as for a 10-hour one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont

from ferkit.io import atomic_write
from ferkit.video.results import GROUPS

EMOTION_COLOURS = {"angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#2ca02c",
                   "sad": "#1f77b4", "surprise": "#ff7f0e", "neutral": "#b0b0b0", "contempt": "#e377c2"}
GROUP_COLOURS = {"positive": "#2ca02c", "neutral": "#b0b0b0", "negative": "#d62728"}
OTHER_COLOUR = "#444444"
"""A label outside EMOTION_COLOURS (a custom model's)."""
MOMENT_COLOURS = {"low": "#d62728", "high": "#2ca02c"}
MAX_LANES = 24

WIDTH = 1210
LEFT, RIGHT, TOP, BOTTOM = 78, 120, 30, 46
"""Margins in pixels: lane names and axis names on the left, legends on the right, title on top, seconds below."""
LANE_PX, GROUP_PX, FACES_PX, GAP_PX = 26, 150, 70, 16
PLOT_PX = WIDTH - LEFT - RIGHT
WHITE = np.array([255, 255, 255], np.uint8)


def _rgb(colour: str) -> np.ndarray:
    return np.array(ImageColor.getrgb(colour), np.uint8)


def column_seconds(end: int, width: int = PLOT_PX) -> np.ndarray:
    """The first second each of ``width`` pixel columns covers, for a plot of seconds [0, end): a second spans
    several columns in a short video, a column several seconds in a long one."""
    return (np.arange(width) * end // width).astype(np.int64)


def column_means(values: np.ndarray, end: int, width: int = PLOT_PX) -> np.ndarray:
    """``values`` (..., end) per second averaged over the seconds each pixel column covers (..., width)."""
    first = column_seconds(end, width)
    count = np.diff(np.append(first, end))
    sums = np.add.reduceat(values, first, axis=-1)  # a column inside one second gets that second's value
    return sums / np.maximum(count, 1)


def _ticks(end: float) -> list[float]:
    """At most 10 round tick positions (1, 2 or 5 times a power of ten) from 0 to ``end`` seconds."""
    step = 10.0 ** np.floor(np.log10(max(end, 1e-9) / 10))
    for factor in (1, 2, 5, 10):
        if end / (step * factor) <= 10:
            step *= factor
            break
    return [float(v) for v in np.arange(0, end + step / 2, step)]


def _vertical_text(image: Image.Image, text: str, x: int, y_mid: int, font: ImageFont.ImageFont) -> None:
    """``text`` turned 90 degrees, centred on ``y_mid``, its left edge at ``x`` (an axis name)."""
    l, t, r, b = font.getbbox(text)
    strip = Image.new("L", (r - l + 2, b - t + 2), 0)
    ImageDraw.Draw(strip).text((1 - l, 1 - t), text, fill=255, font=font)
    strip = strip.rotate(90, expand=True)
    image.paste((0, 0, 0), (x, y_mid - strip.height // 2), strip)


def _legend(draw: ImageDraw.ImageDraw, x: int, y: int, entries: dict[str, str], font) -> int:
    """Colour swatches with their names, one per line from ``y``; returns the y below the last."""
    for name, colour in entries.items():
        draw.rectangle((x, y + 3, x + 14, y + 11), fill=colour)
        draw.text((x + 20, y + 7), name, fill="black", font=font, anchor="lm")
        y += 17
    return y


def plot_timeline(path: Path, lanes: dict[int, dict[int, str]], seconds: list[dict[str, Any]], labels: list[str],
                  moments: list[dict[str, Any]] | None = None, title: str = "") -> Path:
    """Write the timeline; ``lanes`` person -> second -> label (empty in aggregate-only mode), ``seconds`` the
    group's rows per second (``second``, ``faces`` and a share per group), ``moments`` the lecture view's low and
    high windows (``kind``, ``start_s``, ``end_s``)."""
    if len(lanes) > MAX_LANES:  # the people longest on screen
        keep = sorted(lanes, key=lambda p: -len(lanes[p]))[:MAX_LANES]
        lanes = {p: lanes[p] for p in sorted(keep)}
    end = max([r["second"] + 1 for r in seconds] + [s + 1 for lane in lanes.values() for s in lane] + [1])
    people = sorted(lanes)
    lanes_px = LANE_PX * len(people)
    y_lanes = TOP
    y_group = TOP + (lanes_px + GAP_PX if people else 0)
    y_faces = y_group + GROUP_PX + GAP_PX
    height = y_faces + FACES_PX + BOTTOM
    x0, x1 = LEFT, LEFT + PLOT_PX
    canvas = np.full((height, WIDTH, 3), 255, np.uint8)

    if people:  # a lane: each column the colour of its first second's label, white where the person is not seen
        palette = np.stack([_rgb(EMOTION_COLOURS.get(k, OTHER_COLOUR)) for k in labels] + [WHITE])
        index = {k: i for i, k in enumerate(labels)}
        first = column_seconds(end)
        for row, pid in enumerate(people):
            per_second = np.full(end, len(labels), np.int64)
            for sec, label in lanes[pid].items():
                per_second[sec] = index.get(label, len(labels))
            top = y_lanes + row * LANE_PX
            canvas[top + 3:top + LANE_PX - 3, x0:x1] = palette[per_second[first]]

    shares = np.zeros((len(GROUPS), end))
    faces = np.zeros(end)
    for r in seconds:
        shares[:, r["second"]] = [r[g] for g in GROUPS]
        faces[r["second"]] = r["faces"]
    # the group's shares stacked from the bottom (positive, neutral, negative), white above their sum
    stacked = np.cumsum(column_means(shares, end), axis=0)
    height_share = (np.arange(GROUP_PX)[::-1] + 0.5) / GROUP_PX  # pixel rows top to bottom
    band = (height_share[:, None, None] >= stacked[None]).sum(axis=1)
    group_palette = np.stack([_rgb(GROUP_COLOURS[g]) for g in GROUPS] + [WHITE])
    canvas[y_group:y_group + GROUP_PX, x0:x1] = group_palette[band]

    for m in moments or []:  # shaded across every panel
        a, b = (x0 + int(round(PLOT_PX * min(max(s, 0), end) / end)) for s in (m["start_s"], m["end_s"]))
        region = canvas[y_lanes:y_faces + FACES_PX, a:max(b, a + 1)]
        region[:] = (region * 0.85 + _rgb(MOMENT_COLOURS[m["kind"]]) * 0.15).astype(np.uint8)

    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    small = ImageFont.load_default(size=11)

    faces_top = max(1.0, float(faces.max()))
    per_column = column_means(faces, end)
    ys = y_faces + FACES_PX - 1 - per_column / faces_top * (FACES_PX - 6)
    draw.line([(x0 + i, float(y)) for i, y in enumerate(ys)], fill="black", width=1)

    panels = ([("person", y_lanes, lanes_px)] if people else []) + [("group share", y_group, GROUP_PX),
                                                                   ("faces", y_faces, FACES_PX)]
    for name, top, size in panels:
        draw.rectangle((x0 - 1, top - 1, x1, top + size), outline="black")
        _vertical_text(image, name, 4, top + size // 2, small)
    for row, pid in enumerate(people):
        draw.text((x0 - 6, y_lanes + row * LANE_PX + LANE_PX // 2), f"P{pid}", fill="black", font=small, anchor="rm")
    for value, y in ((0, y_group + GROUP_PX), (0.5, y_group + GROUP_PX // 2), (1, y_group)):
        draw.line((x0 - 5, y, x0 - 1, y), fill="black")
        draw.text((x0 - 7, y), f"{value:g}", fill="black", font=small, anchor="rm")
    for value, y in ((0, y_faces + FACES_PX - 1), (faces_top, y_faces + 5)):
        draw.line((x0 - 5, y, x0 - 1, y), fill="black")
        draw.text((x0 - 7, y), f"{value:g}", fill="black", font=small, anchor="rm")
    bottom = y_faces + FACES_PX
    for value in _ticks(end):
        x = x0 + round(PLOT_PX * value / end)
        draw.line((x, bottom, x, bottom + 4), fill="black")
        draw.text((x, bottom + 6), f"{value:g}", fill="black", font=small, anchor="mt")
    draw.text(((x0 + x1) // 2, height - 6), "seconds", fill="black", font=font, anchor="md")
    for m in moments or []:
        a = x0 + int(round(PLOT_PX * min(max(m["start_s"], 0), end) / end))
        draw.text((a + 2, y_group - 2), m["kind"], fill=MOMENT_COLOURS[m["kind"]], font=small, anchor="ld")
    if title:
        draw.text(((x0 + x1) // 2, TOP // 2), title, fill="black", font=font, anchor="mm")

    y = TOP
    if people:
        y = _legend(draw, x1 + 10, y, {k: EMOTION_COLOURS.get(k, OTHER_COLOUR) for k in labels}, small) + 8
    _legend(draw, x1 + 10, max(y, y_group), GROUP_COLOURS, small)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path
