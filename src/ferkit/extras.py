"""Which optional extras are installed: one map from an extra to the modules it must make importable.

The CLI refuses a command whose extra is missing with one line (``require``); the server offers its video endpoints
only where the video extra is installed (``installed``). ``ferkit.video`` itself imports without its extra (its heavy
imports are lazy), so importing it is no test of the extra.
"""

from __future__ import annotations

import importlib

from ferkit.errors import missing_extra

EXTRA_MODULES = {"train": ("torch", "timm", "safetensors", "onnx"),
                 "explain": ("torch", "timm", "safetensors", "pytorch_grad_cam"),
                 "serve": ("fastapi", "uvicorn", "prometheus_client"),
                 "video": ("supervision", "av", "dlib", "onnx")}


def installed(extra: str) -> bool:
    """Whether every module of ``extra`` imports."""
    try:
        for module in EXTRA_MODULES[extra]:
            importlib.import_module(module)
    except ImportError:
        return False
    return True


def require(extra: str, what: str) -> None:
    """Raise the one-line MissingExtraError (naming the pip command) when ``extra`` is not installed."""
    if not installed(extra):
        raise missing_extra(extra, what)
