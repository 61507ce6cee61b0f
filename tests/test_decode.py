"""Decoding at the size detection needs (issue 8): large images reduced while decoding, with boxes still in original
pixels; float and 16-bit images scaled, not blackened; over-limit images reported, not crashing; no process-wide
state changed; the Recognizer's threads stopped by close(). Every image here is built from a real photo."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ferkit.io import MAX_PIXELS, ImageError, MemoryBudget, colour_mode, decode_image, read_image
from tests.conftest import PHOTOS, REPO, need

PORTRAIT = "face_recognition__obama.jpg"
TWO_PEOPLE = "face_recognition__two_people.jpg"


def _photo(name: str = PORTRAIT, mode: str = "RGB") -> Image.Image:
    with Image.open(need(PHOTOS) / name) as img:
        return img.convert(mode)


def test_float32_tiff_of_a_real_photo_decodes_like_the_photo(tmp_path):
    gray = np.asarray(_photo(mode="L")).astype(int)
    unit = gray.astype(np.float32) / 255  # the usual convention for float images: 0-1
    Image.fromarray(unit, mode="F").save(tmp_path / "unit.tif")
    with Image.open(tmp_path / "unit.tif") as check:
        assert check.mode == "F"
    decoded = read_image(tmp_path / "unit.tif", "gray")
    assert decoded.mean() > 50  # it used to be all black
    assert np.abs(decoded - gray).max() <= 1
    rgb = read_image(tmp_path / "unit.tif", "rgb")
    assert rgb.shape == (*gray.shape, 3) and np.abs(rgb[..., 1] - gray).max() <= 1

    Image.fromarray(gray.astype(np.float32), mode="F").save(tmp_path / "bytes.tif")  # floats already 0-255: kept
    assert np.abs(read_image(tmp_path / "bytes.tif", "gray") - gray).max() <= 1
    signed = (gray.astype(np.float32) - 128) / 128  # -1..1: stretched from min to max
    Image.fromarray(signed, mode="F").save(tmp_path / "signed.tif")
    stretched = read_image(tmp_path / "signed.tif", "gray").astype(int)
    expected = (gray - gray.min()) * 255 / (gray.max() - gray.min())
    assert stretched.min() == 0 and stretched.max() == 255 and np.abs(stretched - expected).max() <= 1


def test_float_tiff_with_nan_decodes(tmp_path):
    unit = np.asarray(_photo(mode="L"), dtype=np.float32) / 255
    unit[:10] = np.nan
    Image.fromarray(unit, mode="F").save(tmp_path / "nan.tif")
    decoded = read_image(tmp_path / "nan.tif", "gray")
    assert (decoded[:10] == 0).all() and decoded[10:].mean() > 50


def test_sixteen_bit_png_is_scaled_not_clipped_also_when_reduced(tmp_path):
    gray = np.asarray(_photo(mode="L"))
    deep = gray.astype(np.uint16) * 257
    Image.fromarray(deep).save(tmp_path / "deep.png")
    full = read_image(tmp_path / "deep.png", "gray")
    assert np.abs(full.astype(int) - gray.astype(int) * 255 / gray.max()).max() <= 1
    reduced = decode_image(tmp_path / "deep.png", "gray", max_side=400)
    assert reduced.scale == pytest.approx(1 / 3) and reduced.pixels.shape == (-(-gray.shape[0] // 3), -(-gray.shape[1] // 3))
    h, w = (gray.shape[0] // 3) * 3, (gray.shape[1] // 3) * 3  # each working pixel is the mean of a 3x3 block
    blocks = full[:h, :w].reshape(h // 3, 3, w // 3, 3).mean(axis=(1, 3))
    assert np.abs(reduced.pixels[: h // 3, : w // 3] - blocks).max() <= 1


def test_large_jpeg_is_reduced_while_decoding_with_its_exact_scale(tmp_path):
    photo = _photo("face_recognition__obama_and_biden.jpg")  # 2000x1428
    big = photo.resize((photo.width * 3, photo.height * 3), Image.Resampling.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=95)
    decoded = decode_image(tmp_path / "big.jpg", "rgb", max_side=2048)
    assert (decoded.width, decoded.height) == (6000, 4284)
    h, w = decoded.pixels.shape[:2]
    assert 1024 < max(h, w) <= 2048
    factor = round(1 / decoded.scale)
    assert factor == 1 / decoded.scale and (w, h) == (-(-6000 // factor), -(-4284 // factor))
    reference = cv2.resize(np.asarray(big), (w, h), interpolation=cv2.INTER_AREA)
    assert np.abs(decoded.pixels.astype(int) - reference).mean() < 3


def test_rotated_large_jpeg_reports_the_upright_size(tmp_path):
    photo = _photo()  # 910x1137
    big = photo.resize((photo.width * 3, photo.height * 3))
    exif = big.getexif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise
    big.save(tmp_path / "rotated.jpg", exif=exif, quality=90)
    decoded = decode_image(tmp_path / "rotated.jpg", "rgb", max_side=1024)
    assert (decoded.width, decoded.height) == (3 * 1137, 3 * 910)
    h, w = decoded.pixels.shape[:2]
    assert w > h and w == round(decoded.width * decoded.scale + 0.49)


def test_transparent_large_png_is_composited_on_white_when_reduced(tmp_path):
    rgba = _photo(mode="RGBA").resize((1820, 2274))
    alpha = np.zeros((2274, 1820), np.uint8)
    alpha[:, 910:] = 255  # left half transparent
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "half.png", compress_level=1)
    pixels = read_image(tmp_path / "half.png", "rgb", max_side=800)
    assert pixels.shape == (758, 607, 3)  # reduced by 3
    assert (pixels[:, :303] == 255).all() and pixels[:, 304:].mean() < 200


def test_recognizer_reports_boxes_in_original_pixels_of_a_reduced_image(tmp_path):
    from ferkit.recognizer import Recognizer

    photo = _photo(TWO_PEOPLE)  # 1126x661
    photo.resize((photo.width * 4, photo.height * 4), Image.Resampling.BICUBIC).save(tmp_path / "x4.png",
                                                                                   compress_level=1)
    with Recognizer(workers=1) as recognizer:
        small = recognizer.analyze(PHOTOS / TWO_PEOPLE)
        large = recognizer.analyze(tmp_path / "x4.png")
    assert recognizer.max_side >= 2048
    assert (large.width, large.height) == (4504, 2644) and len(large.faces) == len(small.faces) == 2
    for a, b in zip(small.faces, large.faces):
        assert np.allclose(np.array(b.box), 4 * np.array(a.box), atol=0.08 * a.box[2] * 4), (a.box, b.box)
        for name, (x, y) in a.landmarks.items():
            assert b.landmarks[name] == pytest.approx((4 * x + 1.5, 4 * y + 1.5), abs=0.1 * a.box[2] * 4)
        assert a.emotion == b.emotion


def test_recognizer_close_stops_its_detection_threads():
    from ferkit.recognizer import Recognizer

    photos = [need(PHOTOS) / PORTRAIT, PHOTOS / TWO_PEOPLE, PHOTOS / "face_recognition__biden.jpg"]
    with Recognizer(workers=2) as recognizer:
        if recognizer.workers == 1:
            pytest.skip(f"detector {recognizer.detector.name} is not thread-safe: no detection threads to stop")
        assert [len(r.faces) for r in recognizer.analyze(photos)] == [1, 2, 1]
        assert any(t.name.startswith("ferkit-detect") for t in threading.enumerate())
    assert not any(t.name.startswith("ferkit-detect") for t in threading.enumerate())
    assert [len(r.faces) for r in recognizer.analyze(photos)] == [1, 2, 1]  # still usable: new threads
    recognizer.close()
    assert not any(t.name.startswith("ferkit-detect") for t in threading.enumerate())


def test_memory_budget_lets_a_big_request_wait_until_it_is_alone():
    budget = MemoryBudget(1000)
    entered = threading.Event()

    def big() -> None:
        with budget.hold(5000):  # more than the whole budget: waits for the 600 below, then runs alone
            entered.set()

    with budget.hold(600):
        worker = threading.Thread(target=big)
        worker.start()
        time.sleep(0.2)
        assert not entered.is_set()
    worker.join(5)
    assert entered.is_set() and not worker.is_alive()
    with budget.hold(400), budget.hold(600):  # fits together
        pass


def test_colour_mode_is_one_rule():
    assert (colour_mode(1), colour_mode(3)) == ("gray", "rgb")
    with pytest.raises(ValueError, match="4"):
        colour_mode(4)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's own, for a library caller
def test_data_stats_reports_over_limit_images_and_counts_the_rest(small_fer_tree, tmp_path):
    from ferkit.cli import main
    from ferkit.data.stats import dataset_stats

    happy = small_fer_tree / "happy"
    Image.new("1", (13500, 13500)).save(happy / "Training_bomb.png")  # over twice PIL's limit: PIL raised
    Image.new("1", (10001, 10000)).save(happy / "Training_over.png")  # over ferkit's limit only
    stats = dataset_stats(small_fer_tree)
    assert sum(sum(c.values()) for c in stats.counts.values()) == 7 * 12 + 2
    assert sorted(p.source.rsplit("/", 1)[1] for p in stats.problems) == ["Training_bomb.png", "Training_over.png"]
    assert all("too large" in p.reason for p in stats.problems)
    assert sum(stats.sizes.values()) == 7 * 12 and stats.sizes[(48, 48)] == 7 * 12
    result = CliRunner().invoke(main, ["data", "stats", str(small_fer_tree)])
    assert result.exit_code == 0, result.output
    assert "unreadable: 2" in result.output and "Traceback" not in result.output
    with pytest.raises(ImageError, match=f"{MAX_PIXELS:,}"):
        read_image(happy / "Training_over.png")


def test_importing_and_running_ferkit_changes_no_process_wide_state(tmp_path):
    """PIL's pixel limit and matplotlib's backend stay as the user set them (both used to be overwritten)."""
    script = f"""
import matplotlib
matplotlib.use("svg")
from PIL import Image
Image.MAX_IMAGE_PIXELS = 12345678
import ferkit.io, ferkit.recognizer, ferkit.data.stats
from ferkit.evaluate import save_confusion_plots
from ferkit.train.report import save_curves
from pathlib import Path
m = {{"labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]}}
n = {{"labels": ["a", "b"], "matrix": [[0.75, 0.25], [0.0, 1.0]]}}
save_confusion_plots({{"confusion": m, "confusion_normalized": n}}, {str(tmp_path)!r})
h = [dict(epoch=e, train_loss=1.0 / e, val_loss=1.1 / e, train_accuracy=0.1 * e, val_accuracy=0.09 * e) for e in (1, 2)]
save_curves(h, Path({str(tmp_path / "curves.png")!r}))
from ferkit.video.plots import plot_timeline
seconds = [dict(second=i, positive=0.5, neutral=0.3, negative=0.2, faces=2) for i in range(5)]
plot_timeline(Path({str(tmp_path / "timeline.png")!r}), {{1: {{i: "happy" for i in range(5)}}}}, seconds, ["happy"])
assert Image.MAX_IMAGE_PIXELS == 12345678, Image.MAX_IMAGE_PIXELS
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
print("ok")
"""
    env_path = str(REPO / "src")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    for name in ("confusion.png", "confusion_normalized.png", "curves.png", "timeline.png"):
        with Image.open(tmp_path / name) as png:
            assert png.size[0] > 200 and np.asarray(png.convert("L")).std() > 10


def test_bench_refuses_huge_classification_batches_in_one_line():
    from ferkit.cli import main

    result = CliRunner().invoke(main, ["bench", str(need(PHOTOS) / PORTRAIT), "--batches", "1,100000"])
    assert result.exit_code == 1 and "4096" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
