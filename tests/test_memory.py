"""Peak memory of `ferkit analyze` and `ferkit bench` on folders of large photos: under a fixed bound, and flat in
the number of photos (issue 8: sixteen 10000x9999 16-bit PNGs took 9.3 GB in analyze, 14.4 GB with 4 workers; bench
kept every decoded photo).

The photos are built from a real one: a shared photo, enlarged 3x, pasted into a flat 16-bit gray 10000x9999 canvas
(3.4 MB on disk, like the issue's). Each command runs in a subprocess whose own peak RSS comes from tests/peak_rss.py.
benchmarks/memory.py uses the same helpers for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferkit.faces import get_detector
from tests.conftest import PHOTOS, REPO, need
from tests.peak_rss import run_with_peak_rss

BOUND_MB = 1536
"""The documented bound (README, docs/DESIGN.md "Memory") on ferkit analyze's peak RSS, any number of photos."""
GROWTH_MB = 200
"""Allowed growth from 4 to 16 large photos: the look-ahead of decoded working images (2 per detection thread) and
one batch (64 MB) fill up by ~13 photos, then nothing more is held."""
PHOTO = "face_recognition__obama.jpg"
PASTE_AT = (4000, 3000)
ENLARGE = 3


def make_large_png(path: Path, size: tuple[int, int] = (10000, 9999), enlarge: int = ENLARGE) -> tuple[int, int, int, int]:
    """A 16-bit gray PNG of ``size`` with the real photo, enlarged, pasted at PASTE_AT on a flat background.
    Returns the pasted region (x, y, w, h) in the PNG's pixels."""
    with Image.open(need(PHOTOS) / PHOTO) as src:
        gray = src.convert("L")
        gray = gray.resize((gray.width * enlarge, gray.height * enlarge), Image.Resampling.BICUBIC)
    photo = np.asarray(gray, dtype=np.uint16) * 257
    canvas = np.full((size[1], size[0]), 20000, np.uint16)
    x, y = PASTE_AT if size[0] >= PASTE_AT[0] + photo.shape[1] else (0, 0)
    canvas[y:y + photo.shape[0], x:x + photo.shape[1]] = photo
    Image.fromarray(canvas).save(path)
    return x, y, photo.shape[1], photo.shape[0]


def folder_of(image: Path, folder: Path, n: int) -> Path:
    """``n`` names for the same image in a new folder (hard links where the file system allows: no disk used)."""
    folder.mkdir(parents=True)
    for i in range(n):
        target = folder / f"large_{i:02d}.png"
        try:
            os.link(image, target)
        except OSError:
            target.write_bytes(image.read_bytes())
    return folder


def peak_rss_mb(args: list[str], log: Path) -> tuple[int, float]:
    """Run ``python -m ferkit.cli ARGS`` (this checkout's ferkit) and return (exit status, its peak RSS in MB)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    with open(log, "w") as out:
        return run_with_peak_rss([sys.executable, "-m", "ferkit.cli", *args], env=env, stdout=out,
                                 stderr=subprocess.STDOUT)


pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="peak RSS of a child process via RUSAGE_CHILDREN (Linux)")


@pytest.fixture(scope="module")
def large_png(tmp_path_factory) -> tuple[Path, tuple[int, int, int, int]]:
    path = tmp_path_factory.mktemp("large") / "large.png"
    region = make_large_png(path)
    return path, region


def test_analyze_peak_memory_is_bounded_and_flat(large_png, tmp_path):
    image, (px, py, pw, ph) = large_png
    assert image.stat().st_size < 10e6  # mostly flat: small on disk, 10000x9999 once decoded
    peaks = {}
    for n in (4, 16):
        folder = folder_of(image, tmp_path / f"in{n}", n)
        status, peaks[n] = peak_rss_mb(["analyze", str(folder), "--out", str(tmp_path / f"out{n}"), "--workers", "4"],
                                       tmp_path / f"log{n}.txt")
        assert status == 0, (tmp_path / f"log{n}.txt").read_text()[-2000:]

    results = json.loads((tmp_path / "out16" / "results.json").read_text())
    assert len(results) == 16
    for r in results:
        assert (r["width"], r["height"]) == (10000, 9999) and len(r["faces"]) == 1, r
        x, y, w, h = r["faces"][0]["box"]  # in original pixels: inside the pasted photo, face-sized
        assert px <= x and py <= y and x + w <= px + pw and y + h <= py + ph and 300 < w < 1500, r["faces"][0]
    with Image.open(tmp_path / "out16" / "annotated" / "large_00.jpg") as annotated:
        # drawn on the working image (at most twice the default detector's max_side), not a 10000 px copy
        assert max(annotated.size) <= 2 * max(get_detector("auto").max_side, 1024)

    assert peaks[16] < BOUND_MB, peaks
    assert peaks[16] - peaks[4] < GROWTH_MB, peaks


def test_bench_peak_memory_does_not_grow_with_photos(tmp_path):
    """bench used to keep every decoded photo (36 MB each for these 12 MP ones): now it streams them."""
    image = tmp_path / "photo.png"
    make_large_png(image, size=(4000, 3000), enlarge=1)
    peaks = {}
    for n in (2, 8):
        folder = folder_of(image, tmp_path / f"in{n}", n)
        status, peaks[n] = peak_rss_mb(["bench", str(folder), "--repeat", "1", "--batches", "1,16",
                                        "--min-seconds", "0", "--workers", "2"], tmp_path / f"bench{n}.txt")
        assert status == 0, (tmp_path / f"bench{n}.txt").read_text()[-2000:]
    assert f"{8} photos, {8} faces" in (tmp_path / "bench8.txt").read_text()
    assert peaks[8] - peaks[2] < 100, peaks  # holding the 6 more photos decoded would add 216 MB
    assert peaks[8] < BOUND_MB, peaks
