"""Video jobs: an upload becomes a job folder, one worker thread runs `ferkit video`'s pipeline on it, and
``GET /v1/videos/{id}`` reports progress, then the results and links to the files it wrote.

Why jobs and not one long request: a video takes minutes, longer than any request's time limit, and a client can
poll (or reconnect) while the work continues. Bounded on purpose: one video at a time (it uses the cores the image
API also needs), at most ``MAX_PENDING`` jobs queued or running (more is a 429), and only the newest ``KEEP_DONE``
finished jobs are kept on disk. The job folders live in a temporary folder removed when the server stops.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferkit.errors import FerkitError
from ferkit.serve.config import ServeConfig
from ferkit.serve.errors import APIError

log = logging.getLogger("ferkit.serve")

MAX_PENDING = 4
KEEP_DONE = 32


@dataclass
class Job:
    id: str
    name: str
    model: str
    folder: Path
    status: str = "queued"
    frames_done: int = 0
    frames_total: int | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    @property
    def input(self) -> Path:
        return self.folder / ("input" + Path(self.name).suffix.lower()[:8])

    @property
    def out(self) -> Path:
        return self.folder / "out"

    def files(self) -> list[str]:
        """The outputs written so far (top-level files of the job's output folder)."""
        return sorted(p.name for p in self.out.iterdir() if p.is_file()) if self.out.is_dir() else []

    def to_dict(self) -> dict[str, Any]:
        seconds = (self.finished or time.time()) - self.started if self.started else 0.0
        out: dict[str, Any] = {"id": self.id, "source": self.name, "model": self.model, "status": self.status,
                               "progress": {"frames_done": self.frames_done, "frames_total": self.frames_total,
                                            "seconds": round(seconds, 2)},
                               "links": {"self": f"/v1/videos/{self.id}",
                                         **{name: f"/v1/videos/{self.id}/files/{name}" for name in self.files()}}}
        if self.error:
            out["error"] = self.error
        if self.result is not None:
            out["result"] = self.result
        return out


class VideoJobs:
    """The job table and the worker thread; ``recognizer_for(model)`` makes the video thread's own Recognizer
    (the image batchers' Recognizers are never shared with it)."""

    def __init__(self, config: ServeConfig, resolve_model) -> None:
        self.config = config
        self.resolve_model = resolve_model
        self.root = Path(tempfile.mkdtemp(prefix="ferkit-videos-"))
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ferkit-video")
        self._recognizers: dict[str, Any] = {}
        self._stopping = False

    def close(self) -> None:
        self._stopping = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise APIError(404, "not_found", f"no video job {job_id!r} (finished jobs are kept for the newest "
                                             f"{KEEP_DONE} only)")
        return job

    def file(self, job_id: str, name: str) -> Path:
        job = self.get(job_id)
        if name not in job.files():  # only names listed in the job's folder: no path ever built from user input
            raise APIError(404, "not_found", f"video job {job_id} has no file {name!r}; see its links")
        return job.out / name

    def new_job(self, name: str, model: str | None) -> Job:
        with self._lock:
            pending = sum(j.status in ("queued", "running") for j in self.jobs.values())
            if pending >= MAX_PENDING:
                raise APIError(429, "busy", f"{pending} video jobs are queued or running; try again when one "
                                            "has finished")
            job = Job(uuid.uuid4().hex, Path(name).name or "video", self.resolve_model(model), Path())
            job.folder = self.root / job.id
            job.folder.mkdir()
            self.jobs[job.id] = job
            return job

    def start(self, job: Job) -> None:
        self._pool.submit(self._run, job)
        self._expire()

    def discard(self, job: Job) -> None:
        with self._lock:
            self.jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def _expire(self) -> None:
        with self._lock:
            done = sorted((j for j in self.jobs.values() if j.status in ("done", "failed")), key=lambda j: j.created)
            for job in done[:-KEEP_DONE] if len(done) > KEEP_DONE else []:
                self.jobs.pop(job.id, None)
                shutil.rmtree(job.folder, ignore_errors=True)

    def _recognizer(self, model: str):
        if model not in self._recognizers:
            from ferkit.recognizer import Recognizer

            self._recognizers[model] = Recognizer(model, self.config.detector, workers=1, tta=self.config.tta)
        return self._recognizers[model]

    def _run(self, job: Job) -> None:
        from ferkit.video import VideoOptions, VideoRun

        job.status, job.started = "running", time.time()
        try:
            run = VideoRun(self._recognizer(job.model), job.input, VideoOptions(), out=job.out)
            job.frames_total = run.source.frame_count
            for _ in run:
                job.frames_done = run.frames
                if self._stopping:
                    run.close()
                    raise APIError(503, "stopped", "the server stopped before the video was finished")
            result = run.result()
            job.frames_done = result.frames
            job.result = result.to_dict()
            job.result["source"] = job.name
            job.status = "done"
        except (FerkitError, APIError) as exc:
            job.error, job.status = str(exc).replace(str(job.input), job.name), "failed"
        except Exception:  # a bug: logged with its traceback here, one line for the client
            log.exception("video job %s failed", job.id)
            job.error = "internal error while analysing the video (the server log has the details)"
            job.status = "failed"
        finally:
            job.finished = time.time()
