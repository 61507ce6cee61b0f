"""What the network is trained towards: per-sample target distributions, class weights and the loss.

Targets are distributions (N, classes) rather than class indices so one loss serves one-hot labels, FER+ vote
distributions (``soft_labels``), mixup/CutMix blends and distillation from a teacher package alike.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from ferkit.train.config import TrainConfig
from ferkit.train.tensors import TensorSet

log = logging.getLogger(__name__)


def class_weight_tensor(cfg: TrainConfig, train: TensorSet) -> torch.Tensor | None:
    """Per-class loss weights from the training counts (``loss.class_weights``), or None."""
    if not cfg.loss.class_weights:
        return None
    from ferkit.data.weights import class_weights

    counts = torch.bincount(train.targets, minlength=len(train.labels)).tolist()
    w = class_weights(dict(zip(train.labels, counts)), cfg.loss.class_weights)
    return torch.tensor([w[lab] for lab in train.labels], dtype=torch.float32)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                       smoothing: float) -> torch.Tensor:
    """Cross-entropy against soft targets (one-hot, mixed or FER+ votes), with class weights and label smoothing."""
    target = _smooth(target, smoothing)
    logp = F.log_softmax(logits.float(), dim=1)
    per_sample = -(target * logp).sum(1)
    if weight is None:
        return per_sample.mean()
    w = (target * weight).sum(1)
    return (per_sample * w).sum() / w.sum()


def _smooth(target: torch.Tensor, smoothing: float) -> torch.Tensor:
    return target * (1 - smoothing) + smoothing / target.shape[1] if smoothing else target


def sample_shares(target: torch.Tensor, weight: torch.Tensor | None, smoothing: float) -> torch.Tensor:
    """How much each sample counts in :func:`soft_cross_entropy`'s average over a batch (1 each without class
    weights): a worker holding part of a global batch scales its loss by its part's sum of these over the
    batch's (:mod:`ferkit.train.distributed`)."""
    if weight is None:
        return torch.ones(target.shape[0])
    return (_smooth(target, smoothing) * weight).sum(1)


def forward_train(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
    """Logits plus any auxiliary loss the model adds in training (e.g. the autoencoder's lambda * MSE).

    Models with a training-only objective define ``forward_with_aux(x) -> (logits, aux_loss)``; plain
    ``forward`` stays logits-only so export and inference never see the auxiliary branch.
    """
    if hasattr(model, "forward_with_aux"):
        return model.forward_with_aux(x)
    return model(x), 0.0


def train_targets(cfg: TrainConfig, train: TensorSet, run: Path) -> torch.Tensor:
    """Per-sample target distributions (N, classes): one-hot labels, or FER+ votes with ``soft_labels``, mixed
    with a teacher's probabilities when the recipe distils (:mod:`ferkit.train.distill`, cached in ``run``)."""
    targets = F.one_hot(train.targets, len(train.labels)).float()
    if cfg.data.soft_labels and train.soft is not None:
        targets = train.soft
    if cfg.distill is None:
        return targets
    from ferkit.train.distill import cached_teacher_probabilities

    d = cfg.distill
    teacher = cached_teacher_probabilities(run / "teacher_targets.safetensors", d.teacher, train.images,
                                           train.labels, d.temperature, d.flip)
    agree = float((teacher.argmax(1) == train.targets).float().mean())
    log.info(f"distilling from {d.teacher}: teacher agrees with {agree:.1%} of the training labels")
    return d.weight * teacher + (1 - d.weight) * targets
