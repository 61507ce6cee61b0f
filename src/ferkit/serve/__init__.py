"""`ferkit serve`: the Recognizer behind an HTTP API and a web page (optional extra ``serve``).

Layout, one job per module: ``config`` (the settings, a plain dataclass), ``limits`` (the ASGI guard: API key, body
size, time limit; image header checks), ``batcher`` (concurrent requests' images share model calls), ``metrics``
(Prometheus), ``service`` (uploads -> results, no HTTP), ``routes`` (thin HTTP layer), ``app`` (``create_app``).
"""

from __future__ import annotations

from ferkit.serve.config import ServeConfig


def create_app(config: ServeConfig | None = None):
    """The FastAPI application for ``config`` (models load when it starts); needs the ``serve`` extra."""
    from ferkit.serve.app import create_app as _create_app

    return _create_app(config or ServeConfig())


__all__ = ["ServeConfig", "create_app"]
