"""Knowledge distillation from a model package: the teacher's softened probabilities become training targets.

Why static targets (computed once on the un-augmented training images) instead of a teacher forward on every
augmented batch: on two CPU cores a teacher forward costs a third of a training step, so static targets buy ~30%
more epochs for the same time. With ``flip`` the teacher's targets are the mean over each image and its mirror,
so the student learns in one crop what the teacher only reaches with flip test-time augmentation.

The teacher is any model package (ONNX + card), so a run is exported first (``ferkit export``). Labels travel by
name: teacher probabilities are mapped into the student's label space with :func:`ferkit.labels.map_probs`. The
teacher may be any classifier ``--model`` accepts, an ensemble package included.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ferkit.io import atomic_write
from ferkit.labels import map_probs


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at temperature T: softmax(logits / T) == p ** (1/T), renormalised."""
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be > 0, not {temperature}")
    p = np.clip(probs.astype(np.float64), 1e-12, None) ** (1.0 / temperature)
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def teacher_probabilities(teacher: str, images: torch.Tensor, labels: Sequence[str], temperature: float = 1.0,
                          flip: bool = True) -> torch.Tensor:
    """Teacher probabilities (N, len(labels)) in the student's label order for uint8 images (N, C, H, W)."""
    from ferkit.classify import load_classifier

    # Raw probabilities, not the teacher card's calibration: the recipe's `temperature` is what softens the targets,
    # and the cached targets are keyed by (teacher, temperature, flip), so a later `ferkit calibrate` of the teacher
    # must not change what the same recipe trains on (nor stack a second temperature on the recipe's). An ensemble
    # teacher still combines its members as they run everywhere else; only its own calibration is left out.
    classifier = load_classifier(teacher, tta="flip" if flip else "none", calibrated=False)
    crops = [img.squeeze(-1) if img.shape[-1] == 1 else img for img in images.permute(0, 2, 3, 1).numpy()]
    probs = soften(classifier.predict_proba(crops), temperature)
    if list(classifier.labels) != list(labels):
        probs = map_probs(probs, classifier.labels, list(labels))
    return torch.from_numpy(probs.astype(np.float32))


def cached_teacher_probabilities(cache: Path, teacher: str, images: torch.Tensor, labels: Sequence[str],
                                 temperature: float, flip: bool) -> torch.Tensor:
    """:func:`teacher_probabilities`, stored in the run folder so a resumed run trains on identical targets."""
    key = {"teacher": str(teacher), "temperature": str(temperature), "flip": str(flip), "n": str(len(images))}
    if cache.exists():
        from safetensors import safe_open

        with safe_open(str(cache), "pt") as f:
            if f.metadata() == key:
                return f.get_tensor("probs")
    probs = teacher_probabilities(teacher, images, labels, temperature, flip)
    atomic_write(cache, lambda p: save_file({"probs": probs.contiguous()}, str(p), metadata=key))
    return probs
