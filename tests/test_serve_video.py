"""Video jobs over real HTTP: a real clip from ../shared/data/videos through POST /v1/videos, polled to the end,
its files downloaded; a file that is not a video fails its job with a clear message; the page's video tab."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import DATA, need
from tests.serve_server import Server

pytest.importorskip("ferkit.video", reason="needs `ferkit video` and its extra: pip install -e \".[video]\"")
httpx = pytest.importorskip("httpx", reason="needs the test extra (httpx)")

KEY = "video-key"
AUTH = {"X-API-Key": KEY}
CLIP = "huimiang__1543684773.avi"


@pytest.fixture(scope="module")
def server():
    srv = Server("--api-key", KEY)
    yield srv
    srv.stop()


def wait_for(server, job: dict, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    seen = []
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
        job = httpx.get(server.url + job["links"]["self"], headers=AUTH).json()
        seen.append(job["progress"]["frames_done"])
    assert seen == sorted(seen)  # progress only goes forward
    return job


def test_video_job_runs_to_results_and_files(server):
    clip = need(DATA / "videos" / CLIP)
    r = httpx.post(server.url + "/v1/videos", headers=AUTH, files={"file": (CLIP, clip.read_bytes())}, timeout=60)
    assert r.status_code == 202, r.text
    job = wait_for(server, r.json())
    assert job["status"] == "done", job
    result = job["result"]
    assert result["source"] == CLIP and result["frames"] == 67 == job["progress"]["frames_done"]
    assert len(result["people"]) == 1 and result["clip"]["faces_seen"]
    assert {"summary.json", "frames.csv", "timeline.png"} <= set(job["links"])
    summary = httpx.get(server.url + job["links"]["summary.json"], headers=AUTH)
    assert summary.status_code == 200 and json.loads(summary.content)["frames"] == 67
    png = httpx.get(server.url + job["links"]["timeline.png"], headers=AUTH)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert httpx.get(server.url + job["links"]["self"]).status_code == 401  # the key guards jobs too


def test_not_a_video_fails_its_job_and_unknown_ids_are_404(server):
    r = httpx.post(server.url + "/v1/videos", headers=AUTH, files={"file": ("talk.mp4", b"not a video at all")})
    assert r.status_code == 202, r.text
    job = wait_for(server, r.json())
    assert job["status"] == "failed" and "talk.mp4" in job["error"] and "not a video" in job["error"]
    assert "/tmp" not in job["error"]  # the server's paths stay private
    for path in ("/v1/videos/nope", f"/v1/videos/{job['id']}/files/summary.json",
                 f"/v1/videos/{job['id']}/files/..%2F..%2Fetc%2Fpasswd"):
        r = httpx.get(server.url + path, headers=AUTH)
        assert r.status_code == 404 and r.json()["error"] in ("not_found", "http_404"), (path, r.text)
    r = httpx.post(server.url + "/v1/videos", headers=AUTH, files={"file": ("empty.mp4", b"")})
    assert r.status_code == 400 and r.json()["error"] == "empty"
    r = httpx.post(server.url + "/v1/videos", headers=AUTH, files={"video": ("a.mp4", b"x")})
    assert r.status_code == 422 and r.json()["error"] == "missing_field"


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
def test_page_video_tab(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the test extra (playwright)")
    clip = need(DATA / "videos" / CLIP)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/")
        page.get_by_label("This server needs an API key").fill(KEY)
        page.get_by_role("button", name="Use key").click()
        page.get_by_role("tab", name="Video").click()
        page.set_input_files("#video-file", str(clip))
        page.wait_for_selector("#video-result:not([hidden])", timeout=300_000)
        assert page.locator("#video-progress").evaluate("e => e.value") == 100
        assert "67 frames" in page.locator("#video-summary").inner_text()
        assert page.locator("#video-timeline").evaluate("img => img.naturalWidth") > 100
        assert page.get_by_role("button", name="Download summary.json").count() == 1
        browser.close()
    assert not errors, errors
