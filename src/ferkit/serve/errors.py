"""The API's one error shape, ``{"error": code, "message": one line}``, and the exception routes raise to send it.

Why one shape: clients (and the page) show ``message`` as is; no handler ever puts a traceback in a response.
"""

from __future__ import annotations

import json


class APIError(Exception):
    """An answer with a 4xx status: ``code`` is stable for programs, ``message`` says what to do."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
