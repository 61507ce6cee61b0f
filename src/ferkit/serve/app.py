"""``create_app(config)``: the FastAPI application, with the models loaded before it is returned.

Errors leave as ``{"error", "message"}`` JSON with a 4xx status; an unexpected exception is logged here with its
traceback and answered 500 with a one-line message, never the traceback (what deepface's API sends its clients).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from ferkit import __version__
from ferkit.extras import installed
from ferkit.serve.config import ServeConfig
from ferkit.serve.errors import APIError
from ferkit.serve.limits import Guard
from ferkit.serve.metrics import Metrics
from ferkit.serve.routes import router, video_router
from ferkit.serve.service import AnalyzeService

log = logging.getLogger("ferkit.serve")
STATIC_DIR = Path(__file__).resolve().parent / "static"


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def create_app(config: ServeConfig) -> FastAPI:
    """The app for ``config``; the models load here (once), the batchers start with the server's lifespan."""
    metrics = Metrics()
    service = AnalyzeService(config, metrics)
    videos = None
    if installed("video"):  # ferkit.video imports without its extra, so ask for the extra itself
        from ferkit.serve.videos import VideoJobs

        videos = VideoJobs(config, service.resolve)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            if videos is not None:
                videos.close()

    app = FastAPI(title="ferkit", version=__version__, lifespan=lifespan,
                  description="Faces and their emotions in images. Every endpoint but /health needs the API key "
                              "when the server has one (`X-API-Key: KEY` or `Authorization: Bearer KEY`). Errors "
                              "are `{\"error\": code, \"message\": text}` with a 4xx status.")
    app.state.config = config
    app.state.service = service
    app.state.metrics = metrics
    app.state.static_dir = STATIC_DIR
    app.state.videos = videos
    app.include_router(router)
    if videos is not None:  # no video endpoints at all where `ferkit video` is not installed
        app.include_router(video_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        response = _error(exc.status_code, f"http_{exc.status_code}", str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal server error (the server log has the details)")

    app.add_middleware(Guard, config=config, observe=metrics.observe_request)
    return app


def run(config: ServeConfig) -> None:
    """Load the models, then serve until interrupted (``ferkit serve``)."""
    import uvicorn

    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level, timeout_keep_alive=5,
                limit_concurrency=512, server_header=False)
