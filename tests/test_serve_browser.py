"""The page at / in a real browser (Debian's chromium driven by Playwright) against a real `ferkit serve`.

Uploads a real photo and checks the boxes (pixels on the canvas in each emotion's colour), labels and score bars;
saves the screenshot the README shows (docs/img/serve.png); downloads the CSV; runs the live mode on Chromium's
fake camera fed with a clip made from ../shared/data/videos, so the overlay has a real face to find.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import DATA, PHOTOS, REPO, need
from tests.serve_server import Server

sync_api = pytest.importorskip("playwright.sync_api", reason="needs the test extra (playwright)")
httpx = pytest.importorskip("httpx", reason="needs the test extra (httpx)")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
KEY = "browser-key"
PHOTO = "face_recognition__two_people.jpg"
SCREENSHOT = REPO / "docs" / "img" / "serve.png"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium (apt-get install -y chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def server():
    srv = Server("--api-key", KEY)
    yield srv
    srv.stop()


def write_y4m(video: Path, out: Path, frames: int = 60) -> Path:
    """A YUV4MPEG2 clip (what --use-file-for-fake-video-capture plays, in a loop) from a real video."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = round(cap.get(cv2.CAP_PROP_FPS) or 30)
    with open(out, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            ok, frame = cap.read()
            if not ok:
                break
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    cap.release()
    return out


def open_page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_selector("#key-form:not([hidden])")  # the server has a key: the page asks for it
    page.get_by_label("This server needs an API key").fill(KEY)
    page.get_by_role("button", name="Use key").click()
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    return page, errors


def test_upload_photo_draws_boxes_labels_and_bars(server, tmp_path):
    photo = need(PHOTOS) / PHOTO
    expected = httpx.post(server.url + "/v1/analyze", headers={"X-API-Key": KEY},
                          files={"file": (PHOTO, photo.read_bytes())}, timeout=60).json()
    assert len(expected["faces"]) == 2
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page, errors = open_page(browser, server)
        assert page.get_by_label("Model").input_value() == "default"
        page.set_input_files("#files", [str(photo), str(PHOTOS / "face_recognition__obama.jpg")])
        page.wait_for_function("document.querySelectorAll('article.result').length == 2")
        article = page.locator(f"article.result[data-source='{PHOTO}']")
        assert article.get_attribute("data-faces") == "2"
        titles = article.locator(".face strong").all_inner_texts()
        assert [t.split()[2] for t in titles] == [f["emotion"] for f in expected["faces"]]
        labels = len(expected["faces"][0]["scores"])
        assert article.locator(".face").first.locator("[role=meter]").count() == labels
        # the box outlines are on the canvas, each in its emotion's colour
        colours = page.evaluate("COLORS")
        for face in expected["faces"]:
            x, y, w, h = face["box"]
            pixel = page.evaluate(
                """([x, y]) => Array.from(document.querySelector("article.result[data-source='%s'] canvas")
                     .getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3))""" % PHOTO, [x + w // 2, y + h - 1])
            want = [int(colours[face["emotion"]][i:i + 2], 16) for i in (1, 3, 5)]
            assert max(abs(a - b) for a, b in zip(pixel, want)) <= 8, (pixel, want, face["emotion"])
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=False)
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: one column, nothing wider than the screen
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.set_viewport_size({"width": 1280, "height": 1000})
        with page.expect_download() as download:
            page.get_by_role("button", name="Download CSV").click()
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert len(rows) == 3 and {r["source"] for r in rows} == {PHOTO, "face_recognition__obama.jpg"}
        assert set(expected["faces"][0]["scores"]) <= set(rows[0])
        with page.expect_download() as download:
            page.get_by_role("button", name="Download JSON").click()
        assert len(json.loads(Path(download.value.path()).read_text())) == 2
        # a file that is not an image is reported on the page, and the next photo still works
        bad = tmp_path / "notes.jpg"
        bad.write_text("not an image")
        page.set_input_files("#files", str(bad))
        page.wait_for_selector("article.result.failed")
        assert "not an image" in page.locator("article.result.failed .summary").inner_text()
        page.set_input_files("#files", str(PHOTOS / "face_recognition__obama.jpg"))
        page.wait_for_function("document.querySelectorAll('article.result:not(.failed)').length == 3")
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
    assert not errors, errors


def test_live_mode_on_fake_camera(server, tmp_path):
    clip = write_y4m(need(DATA / "videos" / "huimiang__1543684773.avi"), tmp_path / "clip.y4m")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=[*ARGS, f"--use-file-for-fake-video-capture={clip}"])
        page, errors = open_page(browser, server)
        page.get_by_role("tab", name="Live camera").click()
        page.get_by_role("button", name="Start camera").click()
        page.wait_for_function("Number(document.querySelector('#overlay').dataset.frames || 0) >= 3", timeout=60_000)
        assert int(page.locator("#overlay").get_attribute("data-faces")) == 1
        person = page.locator("#live-faces li").first.inner_text()
        assert person.startswith("Person #1:")  # one face, the same id from frame to frame
        shares = [int(page.locator(f"#share-{g}").inner_text().rstrip("%")) for g in ("positive", "neutral", "negative")]
        assert sum(shares) == 100
        drawn = page.evaluate("""() => { const c = document.querySelector('#overlay');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
        assert drawn > 100  # the box and label are on the overlay
        page.get_by_role("button", name="Stop").click()
        assert "Camera off" in page.locator("#live-status").inner_text()
        browser.close()
    assert not errors, errors
