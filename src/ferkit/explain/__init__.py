"""Explanations of ferkit's models: Grad-CAM per face on photos, and class visualisation (seed 003).

    from ferkit.explain import explain
    result = explain("photo.jpg")                  # each face's predicted class; target="happy" for another
    result.overlay()                               # the photo with the heat drawn in (RGB uint8)

Both need the package's torch model (``weights.safetensors`` + the card's architecture) and the ``explain`` extra
(torch, pytorch-grad-cam): importing this package does not import them, calling it without them raises one
MissingExtraError line naming the pip command.
"""

from __future__ import annotations

from typing import Any

from ferkit.extras import require

_WHERE = {"explain": "gradcam", "Explainer": "gradcam", "Explanation": "gradcam", "FaceExplanation": "gradcam",
          "class_images": "classvis", "class_grid": "classvis", "torch_model": "members"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ferkit.explain' has no attribute {name!r}")
    if name != "torch_model":  # it needs torch only, and says so itself
        require("explain", f"ferkit.explain.{name}")
    import importlib

    return getattr(importlib.import_module(f"ferkit.explain.{_WHERE[name]}"), name)


__all__ = list(_WHERE)
