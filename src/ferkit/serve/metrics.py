"""Prometheus metrics of one server (its own registry, so several apps in one process never collide).

Counters are what Prometheus wants (``rate(ferkit_faces_total[1m])`` is faces/s over any window); the
``ferkit_faces_per_second`` gauge gives the last minute's rate too, for a reader of /metrics without Prometheus.
"""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WINDOW_S = 60.0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ferkit_requests", "HTTP requests by route, method and status.",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("ferkit_request_seconds", "Time from request start to response, by route.",
                                 ["route"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.images = Counter("ferkit_images", "Images analysed.", registry=self.registry)
        self.faces = Counter("ferkit_faces", "Faces found and classified.", registry=self.registry)
        self.batch_images = Histogram("ferkit_batch_images", "Images per model call (the batcher at work).",
                                      registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64))
        self.batch_seconds = Histogram("ferkit_batch_seconds", "Time of one batch: detect, crop, classify.",
                                       registry=self.registry)
        self.rate = Gauge("ferkit_faces_per_second", f"Faces per second over the last {WINDOW_S:g} s.",
                          registry=self.registry)
        self.rate.set_function(self._faces_per_second)
        self._recent: deque[tuple[float, int]] = deque()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, images: int, faces: int, seconds: float) -> None:
        self.images.inc(images)
        self.faces.inc(faces)
        self.batch_images.observe(images)
        self.batch_seconds.observe(seconds)
        self._recent.append((time.monotonic(), faces))
        self._trim()

    def _trim(self) -> None:
        cutoff = time.monotonic() - WINDOW_S
        while self._recent and self._recent[0][0] < cutoff:
            self._recent.popleft()

    def _faces_per_second(self) -> float:
        self._trim()
        return sum(n for _, n in self._recent) / WINDOW_S

    def render(self) -> bytes:
        return generate_latest(self.registry)
