"""The HTTP layer, kept thin: read the upload from the request, call the service, return its dicts.

POST /v1/analyze takes one image either as multipart form field ``file`` or as the raw body (Content-Type
image/* or application/octet-stream), so both ``curl -F file=@photo.jpg`` and a browser's ``fetch(url, {body:
blob})`` work. The response models document the JSON of ``ferkit analyze`` in /openapi.json.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ferkit import __version__
from ferkit.serve.errors import ERROR_SCHEMA, APIError
from ferkit.serve.metrics import CONTENT_TYPE
from ferkit.serve.service import AnalyzeService

RAW_TYPES = ("image/", "application/octet-stream")
STATIC_INDEX = "index.html"


class FaceOut(BaseModel):
    box: list[int] = Field(description="x, y, width, height in pixels of the original image")
    landmarks: dict[str, list[float]]
    scores: dict[str, float] = Field(description="emotion -> probability, summing to 1")
    emotion: str
    confidence: float
    group: str = Field(description="positive, neutral or negative: the group of the top emotion")
    detector_score: float | None = None


class ImageResultOut(BaseModel):
    source: str
    width: int
    height: int
    model: str
    detector: str
    faces: list[FaceOut]
    error: str | None = Field(None, description="batch only: why this file has no result")
    status: int | None = Field(None, description="batch only: the HTTP status this file alone would have got")


class MemberOut(BaseModel):
    name: str
    weight: float
    labels: list[str]


class ModelOut(BaseModel):
    name: str
    default: bool
    kind: str = Field(description="model (one ONNX graph) or ensemble")
    labels: list[str]
    architecture: str
    parameters: int
    input_size: int
    channels: int
    accuracy: float | None
    detector: str
    tta: str = Field(description="the test-time augmentation of requests that name none")
    method: str | None = Field(None, description="ensembles: vote, average, rank, accuracy or manual")
    members: list[MemberOut] | None = Field(None, description="ensembles: the member models and their weights")


class HealthOut(BaseModel):
    status: str
    version: str
    models: list[str]
    video: bool = Field(description="whether POST /v1/videos exists (ferkit video is installed)")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"description": "error", "content": {"application/json": {"schema": ERROR_SCHEMA}}} for s in statuses}


IMAGE_BODY = {"type": "string", "format": "binary"}
SINGLE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": IMAGE_BODY}}},
    "image/jpeg": {"schema": IMAGE_BODY}, "image/png": {"schema": IMAGE_BODY},
    "application/octet-stream": {"schema": IMAGE_BODY}}}}
BATCH_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"],
                                       "properties": {"files": {"type": "array", "items": IMAGE_BODY}}}}}}}
MODEL_QUERY = Query(None, description="a loaded model's name (GET /v1/models); default: the server's first")
TTA_QUERY = Query(None, description="test-time augmentation: none, flip or tencrop; default: the server's --tta "
                                    "(flip unless set)")

router = APIRouter()


def _service(request: Request) -> AnalyzeService:
    return request.app.state.service


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _form(request: Request, max_files: int):
    try:
        return await request.form(max_files=max_files, max_fields=max_files + 8)
    except HTTPException as exc:  # starlette's multipart errors (too many parts, a malformed body)
        if "Too many files" in str(exc.detail):
            raise APIError(413, "too_many_files", f"too many files: the limit is {max_files - 1} per request") from None
        raise APIError(400, "bad_multipart", f"malformed multipart body ({exc.detail})") from None


async def _read(upload: UploadFile) -> bytes:
    try:
        return await upload.read()
    finally:
        await upload.close()


async def read_single_upload(request: Request, filename: str | None) -> tuple[str, bytes]:
    """(file name, bytes) of the one image in a multipart field ``file`` or in the raw body."""
    media = _media_type(request)
    if media == "multipart/form-data":
        form = await _form(request, 2)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise APIError(422, "missing_field", "the multipart body has no file field named 'file'; send "
                                                 "-F file=@photo.jpg")
        return upload.filename or "upload", await _read(upload)
    if media.startswith(RAW_TYPES):
        return filename or "upload", await request.body()
    raise APIError(415, "unsupported_type", f"Content-Type {media or '(none)'!r} is not accepted; send "
                                            "multipart/form-data with a 'file' field, or the image bytes with "
                                            "Content-Type image/jpeg, image/png or application/octet-stream")


@router.post("/v1/analyze", response_model=ImageResultOut, response_model_exclude_unset=True,
             openapi_extra=SINGLE_BODY, responses=_errors(400, 401, 408, 413, 415, 422),
             summary="Faces and emotions of one image (the JSON of `ferkit analyze`)")
async def analyze(request: Request, model: str | None = MODEL_QUERY, tta: str | None = TTA_QUERY,
                  filename: str | None = Query(None, description="name to report for a raw-body upload")) -> Any:
    _service(request).check_tta(tta)
    name, data = await read_single_upload(request, filename)
    return (await _service(request).analyze(data, name, model, tta)).to_dict()


@router.post("/v1/analyze/batch", response_model=list[ImageResultOut], response_model_exclude_unset=True,
             openapi_extra=BATCH_BODY, responses=_errors(400, 401, 408, 413, 415, 422),
             summary="Several images in one request: one slot each, a bad file reported in its own slot")
async def analyze_batch(request: Request, model: str | None = MODEL_QUERY, tta: str | None = TTA_QUERY) -> Any:
    service = _service(request)
    service.check_tta(tta)
    if _media_type(request) != "multipart/form-data":
        raise APIError(415, "unsupported_type", "send the images as multipart/form-data, each in a field named "
                                                "'files'")
    form = await _form(request, service.config.max_files + 1)
    uploads = [u for u in form.getlist("files") if isinstance(u, UploadFile)]
    if not uploads:
        raise APIError(422, "missing_field", "the multipart body has no file fields named 'files'; send "
                                             "-F files=@a.jpg -F files=@b.jpg")
    if len(uploads) > service.config.max_files:
        raise APIError(413, "too_many_files", f"{len(uploads)} files is over the limit of "
                                              f"{service.config.max_files} per request")
    return await service.analyze_many([(u.filename or f"file{i}", await _read(u)) for i, u in enumerate(uploads)],
                                      model, tta)


@router.get("/v1/models", response_model=list[ModelOut], responses=_errors(401),
            summary="The loaded models (the first answers requests that name none)")
async def models(request: Request) -> Any:
    return _service(request).models()


@router.get("/health", response_model=HealthOut, summary="Liveness: answered without the API key")
async def health(request: Request) -> Any:
    return {"status": "ok", "version": __version__, "models": list(_service(request).recognizers),
            "video": request.app.state.videos is not None}


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}, **_errors(401)},
            summary="Prometheus metrics: requests, latency, images, faces, faces/s, batch sizes")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/", include_in_schema=False)
async def index(request: Request) -> FileResponse:
    return FileResponse(request.app.state.static_dir / STATIC_INDEX)


class VideoProgress(BaseModel):
    frames_done: int
    frames_total: int | None = None
    seconds: float


class VideoJobOut(BaseModel):
    id: str
    source: str
    model: str
    status: str = Field(description="queued, running, done or failed")
    progress: VideoProgress
    links: dict[str, str] = Field(description="self, and each file the job wrote (summary.json, frames.csv, ...)")
    error: str | None = None
    result: dict[str, Any] | None = Field(None, description="when done: the JSON of `ferkit video` (summary.json)")


VIDEO_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {"file": IMAGE_BODY}}}}}}

video_router = APIRouter()
"""Included by the app only where ``ferkit.video`` is installed."""


@video_router.post("/v1/videos", status_code=202, response_model=VideoJobOut, response_model_exclude_unset=True,
                   openapi_extra=VIDEO_BODY, responses=_errors(400, 401, 408, 413, 415, 422, 429),
                   summary="Start analysing a video (what `ferkit video` does); poll the job's link for progress")
async def start_video(request: Request, model: str | None = MODEL_QUERY) -> Any:
    import shutil

    from starlette.concurrency import run_in_threadpool

    jobs = request.app.state.videos
    if _media_type(request) != "multipart/form-data":
        raise APIError(415, "unsupported_type", "send the video as multipart/form-data in a field named 'file'")
    form = await _form(request, 2)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise APIError(422, "missing_field", "the multipart body has no file field named 'file'; send "
                                             "-F file=@talk.mp4")
    job = jobs.new_job(upload.filename or "video", model)
    try:
        def save() -> int:
            with open(job.input, "wb") as f:
                shutil.copyfileobj(upload.file, f, 1 << 20)
                return f.tell()

        if await run_in_threadpool(save) == 0:
            raise APIError(400, "empty", f"{job.name}: empty upload (0 bytes); send a video file")
    except BaseException:
        jobs.discard(job)
        raise
    finally:
        await upload.close()
    jobs.start(job)
    return job.to_dict()


@video_router.get("/v1/videos/{job_id}", response_model=VideoJobOut, response_model_exclude_unset=True,
                  responses=_errors(401, 404), summary="A video job: progress, then the results and links to files")
async def video_job(request: Request, job_id: str) -> Any:
    return request.app.state.videos.get(job_id).to_dict()


@video_router.get("/v1/videos/{job_id}/files/{name}", response_class=FileResponse, responses=_errors(401, 404),
                  summary="A file a video job wrote (as listed in its links)")
async def video_file(request: Request, job_id: str, name: str) -> FileResponse:
    return FileResponse(request.app.state.videos.file(job_id, name), filename=name)
