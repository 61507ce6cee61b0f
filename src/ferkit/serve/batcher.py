"""Concurrent requests share model calls: images queued while the model is busy go through it together.

Why: ``Recognizer.analyze`` on a list detects the images in parallel threads (dlib releases the GIL) and classifies
all their faces in one ONNX batch, so N requests answered as one list cost less than N single calls. One worker
thread per Recognizer runs the batches (a Recognizer is not shared between threads), and the event loop never
waits on CPU work.

The policy is the simple one that is correct under any load: take the first queued image, then whatever else is
queued (waiting at most ``wait_ms`` for more), up to ``max_batch``. At low load a request is answered alone, with
no added delay beyond ``wait_ms``; under load batches fill up by themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ferkit.recognizer import Recognizer
from ferkit.results import ImageResult


@dataclass
class _Item:
    image: np.ndarray
    source: str
    future: asyncio.Future
    tta: str | None = None


class Batcher:
    """Queue images for one Recognizer; ``await submit(image, name)`` -> its ImageResult.

    ``on_batch(images, faces, seconds)`` is called after each model call (the metrics hook).
    """

    def __init__(self, recognizer: Recognizer, max_batch: int = 16, wait_ms: float = 2.0,
                 on_batch: Callable[[int, int, float], None] | None = None) -> None:
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"ferkit-batch-{recognizer.model_name}")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._thread.shutdown(wait=True, cancel_futures=True)

    async def submit(self, image: np.ndarray, source: str, tta: str | None = None) -> ImageResult:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(image, source, future, tta))
        return await future

    async def _next_batch(self) -> list[_Item]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except (TimeoutError, asyncio.TimeoutError):
                break
        return [item for item in batch if not item.future.done()]  # a request that timed out is dropped

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._thread, self._analyze, batch)
            except Exception as exc:  # a bug below must fail these requests, not stop the batcher for good
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            if self.on_batch:
                self.on_batch(len(batch), sum(len(r.faces) for r in results), time.perf_counter() - t0)
            for item, result in zip(batch, results):
                result.source = item.source
                if not item.future.done():
                    item.future.set_result(result)

    def _analyze(self, batch: list[_Item]) -> list[ImageResult]:
        """Results in batch order; items asking for different TTA modes go through the model in one call per mode."""
        results: list[ImageResult | None] = [None] * len(batch)
        for tta in dict.fromkeys(item.tta for item in batch):
            idx = [i for i, item in enumerate(batch) if item.tta == tta]
            for i, result in zip(idx, self.recognizer.analyze_iter([batch[i].image for i in idx], tta=tta)):
                results[i] = result
        return results  # type: ignore[return-value]
