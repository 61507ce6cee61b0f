"""The service layer: uploads (bytes) -> ImageResults, with no HTTP in it.

Each upload is checked from its header, decoded in a worker thread, held against a pixel budget (so the decoded
images waiting for the model never exceed a bounded amount of memory) and handed to its model's Batcher.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import numpy as np

from ferkit.io import ImageError, read_image
from ferkit.runtime import TTA_MODES
from ferkit.recognizer import Recognizer
from ferkit.results import ImageResult
from ferkit.serve.batcher import Batcher
from ferkit.serve.config import ServeConfig
from ferkit.serve.errors import APIError
from ferkit.serve.limits import check_image
from ferkit.serve.metrics import Metrics


MODEL_FIELDS = ("kind", "labels", "architecture", "parameters", "input_size", "channels", "accuracy", "method",
                "members")
"""What GET /v1/models shows of each classifier's ``info()`` (method and members: ensembles only)."""


class PixelBudget:
    """At most ``total`` decoded pixels held at once; a request waits (under its time limit) for room."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._cond = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        pixels = min(pixels, self.total)
        async with self._cond:
            await self._cond.wait_for(lambda: self.used + pixels <= self.total)
            self.used += pixels
        try:
            yield
        finally:
            async with self._cond:
                self.used -= pixels
                self._cond.notify_all()


def decode(data: bytes, name: str) -> np.ndarray:
    """RGB uint8 pixels of an upload whose header passed ``check_image``; a corrupt body is a 400."""
    try:
        return read_image(data, "rgb")
    except ImageError as exc:
        message = str(exc)
        if message.startswith("<bytes>"):
            message = name + message[len("<bytes>"):]
        raise APIError(400, "corrupt", message) from None


class AnalyzeService:
    """The models (loaded once, when the service is made), their batchers, and the upload limits."""

    def __init__(self, config: ServeConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.recognizers: dict[str, Recognizer] = {}
        aliases: dict[str, str] = {}
        for model in config.models:
            recognizer = Recognizer(model, config.detector, workers=config.workers, tta=config.tta)
            self.recognizers.setdefault(recognizer.model_name, recognizer)
            aliases[str(model)] = recognizer.model_name
        self.aliases = {**aliases, **{name: name for name in self.recognizers}}
        self.default_model = aliases[str(config.models[0])]
        self.batchers: dict[str, Batcher] = {}
        self.budget: PixelBudget | None = None
        self.decode_limiter: anyio.CapacityLimiter | None = None

    async def start(self) -> None:
        """Start the batchers on the running event loop (the server's lifespan calls this)."""
        self.budget = PixelBudget(self.config.pixel_budget)
        self.decode_limiter = anyio.CapacityLimiter(os.cpu_count() or 1)
        for name, recognizer in self.recognizers.items():
            batcher = Batcher(recognizer, self.config.max_batch, self.config.batch_wait_ms, self.metrics.observe_batch)
            batcher.start()
            self.batchers[name] = batcher

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()
        for recognizer in self.recognizers.values():
            recognizer.close()  # stops its detection threads

    def models(self) -> list[dict[str, Any]]:
        out = []
        for name, recognizer in self.recognizers.items():
            info = recognizer.classifier.info()
            out.append({"name": name, "default": name == self.default_model, "detector": recognizer.detector.name,
                        "tta": recognizer.tta, **{k: info.get(k) for k in MODEL_FIELDS}})
        return out

    def resolve(self, model: str | None) -> str:
        if not model:
            return self.default_model
        if model not in self.aliases:
            raise APIError(400, "unknown_model", f"model {model!r} is not loaded; this server has "
                                                 f"{', '.join(self.recognizers)} (see GET /v1/models)")
        return self.aliases[model]

    def check_tta(self, tta: str | None) -> str | None:
        if tta is not None and tta not in TTA_MODES:
            raise APIError(400, "bad_tta", f"tta {tta!r} is not one of {', '.join(TTA_MODES)} (default: "
                                           f"{self.config.tta}, the server's --tta)")
        return tta

    async def analyze(self, data: bytes, name: str, model: str | None = None, tta: str | None = None) -> ImageResult:
        """One upload -> its ImageResult, or an APIError (empty, not an image, too large, corrupt). ``tta``: this
        request's test-time augmentation (default: the server's)."""
        batcher = self.batchers[self.resolve(model)]
        tta = self.check_tta(tta)
        if len(data) > self.config.max_upload_bytes:
            raise APIError(413, "too_large", f"{name}: {len(data):,} bytes is over the limit of "
                                             f"{self.config.max_upload_bytes:,} per image")
        w, h = check_image(data, name, self.config.max_pixels)
        assert self.budget is not None and self.decode_limiter is not None, "service not started"
        async with self.budget.hold(w * h):
            image = await anyio.to_thread.run_sync(decode, data, name, limiter=self.decode_limiter)
            return await batcher.submit(image, name, tta)

    async def analyze_many(self, uploads: list[tuple[str, bytes]], model: str | None = None,
                           tta: str | None = None) -> list[dict[str, Any]]:
        """Several uploads, one slot each in order; a bad one holds its error and status, the rest are answered."""
        self.resolve(model)  # an unknown model or tta fails the whole request, not each slot
        self.check_tta(tta)

        async def one(name: str, data: bytes) -> dict[str, Any]:
            try:
                return (await self.analyze(data, name, model, tta)).to_dict()
            except APIError as exc:
                slot = ImageResult(name, 0, 0, [], self.resolve(model), error=exc.message).to_dict()
                slot["status"] = exc.status
                return slot

        return list(await asyncio.gather(*(one(name, data) for name, data in uploads)))
