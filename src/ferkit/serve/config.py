"""The server's settings: a plain, picklable dataclass, so the CLI, tests and benchmarks build the same server."""

from __future__ import annotations

from dataclasses import dataclass

from ferkit.errors import UserInputError
from ferkit.runtime import DEFAULT_TTA, TTA_MODES


@dataclass
class ServeConfig:
    """Everything ``create_app`` needs. Limits are per request; ``models[0]`` answers requests that name none.

    max_upload_mb bounds one image file (and the body of POST /v1/analyze); a batch body may hold ``max_files`` of
    them. max_pixels is checked from the image header before any pixel is decoded. timeout_s bounds a whole
    request, reading its body included, so a client that sends bytes very slowly is cut off. max_batch images of
    concurrent requests go through one model call; pixel_budget bounds the decoded images held in memory at once.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    models: tuple[str, ...] = ("default",)
    detector: str = "auto"
    tta: str = DEFAULT_TTA
    """Test-time augmentation of requests that name none (``?tta=`` picks one per request)."""
    api_key: str | None = None
    max_upload_mb: float = 20.0
    max_pixels: int = 50_000_000
    max_video_mb: float = 500.0
    max_files: int = 16
    timeout_s: float = 30.0
    workers: int | None = None
    max_batch: int = 16
    batch_wait_ms: float = 2.0
    pixel_budget: int = 200_000_000
    log_level: str = "info"

    def __post_init__(self) -> None:
        self.models = tuple(dict.fromkeys(self.models)) or ("default",)
        if self.tta not in TTA_MODES:
            raise UserInputError(f"serve: tta must be one of {', '.join(TTA_MODES)}, not {self.tta!r}")
        if self.api_key == "":
            self.api_key = None
        for name in ("max_upload_mb", "max_video_mb", "max_pixels", "max_files", "timeout_s", "max_batch"):
            if getattr(self, name) <= 0:
                raise UserInputError(f"serve: {name} must be positive, not {getattr(self, name)}")
        if self.batch_wait_ms < 0:
            raise UserInputError(f"serve: batch_wait_ms must be >= 0, not {self.batch_wait_ms}")
        self.pixel_budget = max(self.pixel_budget, self.max_pixels)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_video_bytes(self) -> int:
        return int(self.max_video_mb * 1024 * 1024) + 64 * 1024

    @property
    def max_batch_bytes(self) -> int:
        """A batch body: max_files uploads plus room for the multipart headers."""
        return self.max_upload_bytes * self.max_files + 64 * 1024
