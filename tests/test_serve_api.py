"""`ferkit serve` over real HTTP: a server process on 127.0.0.1, real photos, every endpoint and every limit.

Each bad request must get a JSON 4xx (never a traceback), and the server must keep answering afterwards.
"""

from __future__ import annotations

import io
import re
import socket
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import PHOTOS, need
from tests.serve_server import Server

httpx = pytest.importorskip("httpx", reason="needs the test extra (httpx)")

KEY = "test-key-0123456789"
AUTH = {"X-API-Key": KEY}
MAX_UPLOAD_MB, MAX_PIXELS, MAX_FILES, TIMEOUT_S = 4, 40_000_000, 3, 6


@pytest.fixture(scope="module")
def server():
    srv = Server("--api-key", KEY, "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-pixels", str(MAX_PIXELS),
                 "--max-files", str(MAX_FILES), "--timeout", str(TIMEOUT_S))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    folder = need(PHOTOS)
    names = ["face_recognition__obama.jpg", "face_recognition__two_people.jpg", "dlib__2008_001322.jpg",
             "face_recognition__biden.jpg"]
    return {n: (folder / n).read_bytes() for n in names}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code and body["message"] and "Traceback" not in body["message"], body
    return body


def assert_serving(client, photos) -> None:
    """The server still answers a real photo correctly after whatever came before."""
    r = client.post("/v1/analyze", files={"file": ("obama.jpg", photos["face_recognition__obama.jpg"])})
    assert r.status_code == 200, r.text
    assert len(r.json()["faces"]) == 1


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no pixel data: what a client could send to make a
    server allocate gigabytes if it decoded before checking."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A valid side x side all-black grayscale PNG: a few hundred KB that decode to side**2 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def raw_request(server, head: str, body_parts, pause: float = 0.0, read_timeout: float = 30.0) -> tuple[int, float]:
    """Send a request by hand (for bodies httpx will not send); returns (status, seconds until the answer)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout) as s:
        s.sendall(head.encode())
        try:
            for part in body_parts:
                s.sendall(part)
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the body was all sent: what a limit should do
        answer = b""
        try:
            while b"\r\n" not in answer:
                more = s.recv(4096)
                if not more:
                    break
                answer += more
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split()[1]), time.monotonic() - t0


# --- endpoints -------------------------------------------------------------------------------------------------

def test_health_needs_no_key(server):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["models"] == ["default"]


@pytest.mark.parametrize("method,path", [("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/openapi.json"),
                                         ("GET", "/docs"), ("POST", "/v1/analyze"), ("POST", "/v1/analyze/batch")])
def test_key_required_everywhere_but_health(server, method, path):
    missing = httpx.request(method, server.url + path, content=b"x" * 10, headers={"Content-Type": "image/jpeg"})
    assert_error(missing, 401, "unauthorized")
    wrong = httpx.request(method, server.url + path, headers={"X-API-Key": KEY[:-1] + "X"})
    assert_error(wrong, 401, "unauthorized")
    bearer = httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code != 401


def test_page_is_served_without_key(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and "<html" in r.text.lower()
    assert httpx.get(server.url + "/static/app.js").status_code == 200


def test_models(client):
    models = client.get("/v1/models").json()
    assert [m["name"] for m in models] == ["default"] and models[0]["default"] is True
    assert "happy" in models[0]["labels"] and 0.5 < models[0]["accuracy"] < 1


def test_analyze_multipart_matches_recognizer(client, photos):
    """The same JSON as `ferkit analyze` (the Recognizer's to_dict), for a photo with two people."""
    from ferkit.recognizer import Recognizer

    name = "face_recognition__two_people.jpg"
    r = client.post("/v1/analyze", files={"file": (name, photos[name], "image/jpeg")})
    assert r.status_code == 200, r.text
    expected = Recognizer().analyze(PHOTOS / name).to_dict()
    expected["source"] = name
    got = r.json()
    assert got.keys() == expected.keys()
    assert len(got["faces"]) == len(expected["faces"]) == 2
    for g, e in zip(got["faces"], expected["faces"]):
        assert g["box"] == e["box"] and g["emotion"] == e["emotion"]
        assert g["scores"] == pytest.approx(e["scores"], abs=1e-5)
        assert sum(g["scores"].values()) == pytest.approx(1, abs=1e-4)


def test_analyze_raw_body(client, photos):
    r = client.post("/v1/analyze", params={"filename": "o.jpg"}, content=photos["face_recognition__obama.jpg"],
                    headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert r.json()["source"] == "o.jpg" and r.json()["faces"][0]["emotion"] in r.json()["faces"][0]["scores"]


def test_unknown_model(client, photos):
    r = client.post("/v1/analyze", params={"model": "nope"}, files={"file": ("a.jpg", photos["dlib__2008_001322.jpg"])})
    assert_error(r, 400, "unknown_model")


def test_batch_reports_a_bad_file_in_its_slot(client, photos):
    files = [("files", ("obama.jpg", photos["face_recognition__obama.jpg"])),
             ("files", ("notes.txt", b"this is not an image")),
             ("files", ("two.jpg", photos["face_recognition__two_people.jpg"]))]
    r = client.post("/v1/analyze/batch", files=files)
    assert r.status_code == 200, r.text
    slots = r.json()
    assert [s["source"] for s in slots] == ["obama.jpg", "notes.txt", "two.jpg"]
    assert len(slots[0]["faces"]) == 1 and len(slots[2]["faces"]) == 2
    assert slots[1]["status"] == 415 and "not an image" in slots[1]["error"] and slots[1]["faces"] == []
    assert "error" not in slots[0] and "status" not in slots[0]


def test_concurrent_requests_share_batches_and_get_their_own_answers(client, server, photos):
    """8 clients at once: each gets the answer for its own photo, and some model calls held several images."""
    single = {n: client.post("/v1/analyze", files={"file": (n, data)}).json() for n, data in photos.items()}
    before = batch_stats(client)
    names = list(photos) * 2

    def post(name: str) -> dict:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
            r = c.post("/v1/analyze", files={"file": (name, photos[name])})
            assert r.status_code == 200, r.text
            return r.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, names))
    for name, answer in zip(names, answers):
        assert answer["source"] == name
        assert [f["box"] for f in answer["faces"]] == [f["box"] for f in single[name]["faces"]]
        for a, s in zip(answer["faces"], single[name]["faces"]):
            assert a["scores"] == pytest.approx(s["scores"], abs=1e-5)
    images, batches = (a - b for a, b in zip(batch_stats(client), before))
    assert images == len(names)
    assert batches < images, "no two requests shared a model call"


def batch_stats(client) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    samples = {s.name: s.value for s in fams["ferkit_batch_images"].samples}
    return samples["ferkit_batch_images_sum"], samples["ferkit_batch_images_count"]


def test_metrics(client, photos):
    from prometheus_client.parser import text_string_to_metric_families

    assert_serving(client, photos)
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    ok = [s for s in fams["ferkit_requests"].samples
          if s.name == "ferkit_requests_total" and s.labels == {"route": "/v1/analyze", "method": "POST", "status": "200"}]
    assert ok and ok[0].value >= 1
    assert any(s.name == "ferkit_request_seconds_count" and s.value >= 1 for s in fams["ferkit_request_seconds"].samples)
    assert [s.value for s in fams["ferkit_faces"].samples if s.name == "ferkit_faces_total"][0] >= 1
    assert fams["ferkit_faces_per_second"].samples[0].value > 0


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/analyze", "/v1/analyze/batch", "/v1/models", "/health", "/metrics"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]
    assert "swagger" in client.get("/docs").text.lower()


# --- bad input: each a clear 4xx, and the server keeps answering ------------------------------------------------

def test_not_an_image_then_a_good_one(client, photos):
    assert_error(client.post("/v1/analyze", files={"file": ("x.jpg", b"GIF89a? no, just text")}), 415, "unsupported_type")
    assert_serving(client, photos)


def test_truncated_image(client, photos):
    data = photos["face_recognition__obama.jpg"]
    assert_error(client.post("/v1/analyze", files={"file": ("cut.jpg", data[: len(data) // 2])}), 400, "corrupt")
    assert_serving(client, photos)


def test_empty_body(client, photos):
    assert_error(client.post("/v1/analyze", content=b"", headers={"Content-Type": "image/jpeg"}), 400, "empty")
    assert_error(client.post("/v1/analyze", files={"file": ("e.jpg", b"")}), 400, "empty")
    assert_serving(client, photos)


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "application/x-www-form-urlencoded", None])
def test_wrong_content_type(client, photos, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/v1/analyze", content=photos["face_recognition__obama.jpg"], headers=headers)
    assert_error(r, 415, "unsupported_type")
    assert_error(client.post("/v1/analyze/batch", content=b"{}", headers={"Content-Type": "application/json"}),
                 415, "unsupported_type")


def test_missing_field(client, photos):
    assert_error(client.post("/v1/analyze", files={"image": ("a.jpg", photos["face_recognition__obama.jpg"])}),
                 422, "missing_field")
    assert_error(client.post("/v1/analyze/batch", data={"files": "not a file"}, files={"x": ("a", b"1")}),
                 422, "missing_field")
    assert_serving(client, photos)


def test_too_many_files(client, photos):
    data = photos["dlib__2008_001322.jpg"]
    r = client.post("/v1/analyze/batch", files=[("files", (f"{i}.jpg", data)) for i in range(MAX_FILES + 1)])
    assert_error(r, 413, "too_many_files")
    r = client.post("/v1/analyze/batch", files=[("files", (f"{i}.jpg", data)) for i in range(MAX_FILES + 5)])
    assert_error(r, 413, "too_many_files")
    assert_serving(client, photos)


def test_30000x30000_png_refused_from_its_header(client, photos):
    r = client.post("/v1/analyze", files={"file": ("huge.png", png_header_only(30000, 30000))})
    body = assert_error(r, 413, "too_many_pixels")
    assert "900,000,000 pixels" in body["message"]
    assert_serving(client, photos)


def test_decompression_bomb(client, photos):
    bomb = png_bomb(10_000)  # 100 MP of black in ~100 KB
    assert len(bomb) < 1_000_000
    assert_error(client.post("/v1/analyze", files={"file": ("bomb.png", bomb)}), 413, "too_many_pixels")
    slots = client.post("/v1/analyze/batch", files=[("files", ("bomb.png", bomb)),
                                                    ("files", ("ok.jpg", photos["face_recognition__obama.jpg"]))]).json()
    assert slots[0]["status"] == 413 and len(slots[1]["faces"]) == 1
    assert_serving(client, photos)


def test_file_over_the_upload_limit(client, photos):
    big = io.BytesIO()
    Image.effect_noise((1600, 1600), 64).convert("RGB").save(big, "PNG")  # noise does not compress: ~5 MB
    assert big.tell() > MAX_UPLOAD_MB * 2**20
    assert_error(client.post("/v1/analyze", files={"file": ("noise.png", big.getvalue())}), 413, "too_large")
    slots = client.post("/v1/analyze/batch", files=[("files", ("noise.png", big.getvalue()))]).json()
    assert slots[0]["status"] == 413
    assert_serving(client, photos)


def test_100mb_body_refused_before_it_is_read(server, client, photos):
    """Content-Length says 100 MB: the answer comes after the first megabyte, without reading the rest."""
    head = (f"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {100 * 2**20}\r\n\r\n")
    status, seconds = raw_request(server, head, [b"\xff" * 2**20])
    assert status == 413 and seconds < 10
    assert_serving(client, photos)


def test_100mb_chunked_body_cut_off_at_the_limit(server, client, photos):
    """No Content-Length (chunked): the server counts bytes and answers 413 once the limit is passed."""
    head = (f"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: image/jpeg\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % 2**20 + b"\xff" * 2**20 + b"\r\n"
    status, _ = raw_request(server, head, (chunk for _ in range(100)))
    assert status == 413
    assert_serving(client, photos)


def test_slow_client_is_cut_off_and_others_are_served(server, client, photos):
    """slowloris: a body sent a byte at a time gets 408 after the time limit; meanwhile others are answered."""
    head = (f"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: image/jpeg\r\n"
            "Content-Length: 100000\r\n\r\n")
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(raw_request, server, head, (b"\xff" for _ in range(40)), 0.25)
        time.sleep(0.5)
        t0 = time.monotonic()
        assert httpx.get(server.url + "/health").status_code == 200
        assert_serving(client, photos)
        assert time.monotonic() - t0 < TIMEOUT_S
        status, seconds = slow.result()
    assert status == 408 and TIMEOUT_S - 0.5 < seconds < TIMEOUT_S + 5
    assert server.alive()


def test_server_survived_with_bounded_memory_and_no_traceback(server):
    """After every bad input above (a 30000x30000 PNG would be 2.7 GB decoded), the server is alive, its peak
    memory stayed low, and nothing it logged is a traceback."""
    assert server.alive()
    assert "Traceback" not in "".join(server.log)
    status = Path(f"/proc/{server.proc.pid}/status")
    if status.exists():
        peak_mb = int(re.search(r"VmHWM:\s+(\d+) kB", status.read_text()).group(1)) / 1024
        assert peak_mb < 1000, f"server peak RSS {peak_mb:.0f} MB"


def test_time_limit_while_processing():
    """A request whose analysis outlasts --timeout gets 408; the work it started is dropped, the server goes on.

    Six large photos in one batch take well over 0.05 s to detect on any CPU, while their upload on loopback does
    not, so the limit strikes during the analysis."""
    names = ["face_recognition__obama-1080p.jpg", "face_recognition__obama3.jpg", "face_recognition__two_people.jpg",
             "face_recognition__obama_and_biden.jpg", "face_recognition__lin-manuel-miranda.png",
             "face_recognition__alex_lacamoire1.jpg"]
    files = [("files", (n, (need(PHOTOS) / n).read_bytes())) for n in names]
    srv = Server("--timeout", "0.05")
    try:
        for _ in range(2):
            assert_error(httpx.post(srv.url + "/v1/analyze/batch", files=files, timeout=60), 408, "timeout")
        assert httpx.get(srv.url + "/health").status_code == 200
        assert srv.alive()
    finally:
        srv.stop()
    assert "Traceback" not in "".join(srv.log)


def test_several_models_one_picked_per_request(tmp_path, photos):
    """--model twice: both load at startup, /v1/models lists them, ?model= picks one per request."""
    from tests.conftest import make_linear_onnx

    labels = ["happy", "sad", "neutral"]
    folder, _, _ = make_linear_onnx(tmp_path / "tiny-linear", labels)
    srv = Server("--model", "default", "--model", str(folder))
    try:
        models = httpx.get(srv.url + "/v1/models").json()
        assert [(m["name"], m["default"]) for m in models] == [("default", True), ("tiny-linear", False)]
        upload = {"file": ("obama.jpg", photos["face_recognition__obama.jpg"])}
        tiny = httpx.post(srv.url + "/v1/analyze", params={"model": "tiny-linear"}, files=upload, timeout=60).json()
        default = httpx.post(srv.url + "/v1/analyze", files=upload, timeout=60).json()
        assert tiny["model"] == "tiny-linear" and set(tiny["faces"][0]["scores"]) == set(labels)
        assert default["model"] == "default" and len(default["faces"][0]["scores"]) == 7
        assert tiny["faces"][0]["box"] == default["faces"][0]["box"]  # same detector, different classifier
    finally:
        srv.stop()


def test_video_endpoints_only_where_the_video_extra_is_installed():
    """ferkit.video imports without its extra, so the app must ask for the extra itself (supervision blocked here)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['supervision'] = None\n"
            "from ferkit.serve import create_app\n"
            "print(sorted(create_app().openapi()['paths']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    paths = out.stdout.strip().splitlines()[-1]
    assert "/v1/analyze" in paths and "/v1/videos" not in paths, paths
