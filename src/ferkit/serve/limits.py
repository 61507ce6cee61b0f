"""The guard in front of every request, before any byte of the body is read: API key, body size, time limit.

A pure ASGI middleware rather than route code because the checks must happen before FastAPI parses a body: a
request without the key or with a ``Content-Length`` over the limit is answered without reading its body, a body
that streams past the limit is cut off at the limit, and a client that sends slowly is answered 408 when the
request's time is up. ``check_image`` reads only an upload's header, so a 30000x30000 PNG or a decompression bomb
is refused before a pixel is decoded.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import re
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from PIL import Image, UnidentifiedImageError

from ferkit.serve.config import ServeConfig
from ferkit.serve.errors import APIError, error_body

PUBLIC_PATHS = frozenset({"/health", "/", "/favicon.ico"})
"""Answered without the API key: the liveness probe and the page's static files (which hold no data; the page
asks the user for the key and sends it with its API calls)."""
STATIC_PREFIX = "/static/"

IMAGE_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "TIFF": "TIFF",
                 "GIF": "GIF"}
"""PIL formats an upload may be in (MPO is how PIL names a JPEG with a second, preview image)."""

ROUTES = ("/v1/analyze", "/v1/analyze/batch", "/v1/videos", "/v1/models", "/health", "/metrics", "/", "/docs",
          "/openapi.json")

Scope = dict[str, Any]
Message = dict[str, Any]


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(STATIC_PREFIX)


def route_label(path: str) -> str:
    """A bounded set of metric labels: known routes by name, the page's files as one, anything else as 'other'."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/videos/"):
        return "/v1/videos/{id}/files" if "/files/" in path else "/v1/videos/{id}"
    return "/static" if path.startswith(STATIC_PREFIX) else "other"


def key_matches(scope: Scope, key: str) -> bool:
    """``X-API-Key: KEY`` or ``Authorization: Bearer KEY``, compared in constant time."""
    expected = key.encode()
    ok = False
    for name, value in scope.get("headers", []):
        if name == b"x-api-key":
            ok |= hmac.compare_digest(value, expected)
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            ok |= hmac.compare_digest(value[7:].strip(), expected)
    return ok


def content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def check_image(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the header of an upload, or an APIError: empty, not an image, or too many pixels."""
    if not data:
        raise APIError(400, "empty", f"{name}: empty upload (0 bytes); send an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                (w, h), fmt = img.size, img.format
    except UnidentifiedImageError:
        raise APIError(415, "unsupported_type",
                       f"{name}: not an image; send JPEG, PNG, WebP, BMP, TIFF or GIF") from None
    except Image.DecompressionBombError as exc:  # PIL's own ceiling (ferkit.io sets it), far above max_pixels
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise APIError(413, "too_many_pixels", f"{name}: {size}, over the limit of {max_pixels:,}; downscale it "
                                               "first") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise APIError(400, "corrupt", f"{name}: unreadable image header ({reason})") from None
    if fmt not in IMAGE_FORMATS:
        raise APIError(415, "unsupported_type", f"{name}: {fmt} images are not accepted; send JPEG, PNG, WebP, BMP, "
                                                "TIFF or GIF")
    if w * h > max_pixels:
        raise APIError(413, "too_many_pixels", f"{name}: {w}x{h} is {w * h:,} pixels, over the limit of "
                                               f"{max_pixels:,}; downscale it first")
    return w, h


class Guard:
    """ASGI middleware: key -> Content-Length -> run the app under the time limit, counting body bytes.

    ``observe(route, method, status, seconds)`` is called once per HTTP request (the metrics hook).
    """

    def __init__(self, app: Callable[..., Awaitable[None]], config: ServeConfig,
                 observe: Callable[[str, str, int, float], None]) -> None:
        self.app = app
        self.config = config
        self.observe = observe

    def body_limit(self, path: str) -> int:
        if path == "/v1/analyze/batch":
            return self.config.max_batch_bytes
        if path == "/v1/videos":
            return self.config.max_video_bytes
        return self.config.max_upload_bytes + 64 * 1024

    def time_limit(self, path: str) -> float | None:
        """--timeout, except for downloads of a video job's files, whose size is the job's, not the client's."""
        return None if path.startswith("/v1/videos/") and "/files/" in path else self.config.timeout_s

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, t0 = scope["path"], time.perf_counter()
        state = {"status": 0}

        async def send_tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        async def reply(status: int, code: str, message: str) -> None:
            headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
            if status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="ferkit"'))
            await send_tracked({"type": "http.response.start", "status": status, "headers": headers})
            await send_tracked({"type": "http.response.body", "body": error_body(code, message)})

        try:
            if self.config.api_key and not is_public(path) and not key_matches(scope, self.config.api_key):
                await reply(401, "unauthorized", "missing or wrong API key; send it as 'X-API-Key: KEY' or "
                                                 "'Authorization: Bearer KEY'")
                return
            limit = self.body_limit(path)
            length = content_length(scope)
            if length is not None and length > limit:
                await reply(413, "too_large", f"request body of {length:,} bytes is over the limit of {limit:,}")
                return
            received = 0

            async def receive_counted() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise APIError(413, "too_large", f"request body is over the limit of {limit:,} bytes")
                return message

            try:
                await asyncio.wait_for(self.app(scope, receive_counted, send_tracked), self.time_limit(path))
            except (TimeoutError, asyncio.TimeoutError):
                if not state["status"]:
                    await reply(408, "timeout", f"request not finished within the {self.config.timeout_s:g} s "
                                                "limit (a body sent too slowly, or the server too busy); try again")
            except APIError as exc:
                if not state["status"]:
                    await reply(exc.status, exc.code, exc.message)
        finally:
            self.observe(route_label(path), scope.get("method", ""), state["status"] or 499, time.perf_counter() - t0)
