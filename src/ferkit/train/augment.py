"""Augmentation on whole batches of tensors.

Why batched: per-image PIL/torchvision transforms in Python cost more than the forward pass of a small net on two
CPU cores. One affine_grid + grid_sample call warps the whole batch (rotation, scale, shift, flip together), and
erasing and photometric jitter are tensor ops too. All randomness comes from the generator passed in, so an epoch's
augmentation is reproducible from (seed, epoch) alone, which is what makes resume exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic.dataclasses import dataclass

from ferkit.train.schema import RECIPE, Fraction, NonNeg, Positive


@dataclass(config=RECIPE)
class AugmentConfig:
    """The ``augment`` section of a recipe: probabilities (``hflip``, ``erase_p``) within [0, 1], ranges as
    [low, high] pairs (``scale`` > 0, ``erase_area`` within [0, 1])."""

    hflip: Fraction = 0.5
    rotate_deg: NonNeg = 15.0
    scale: tuple[Positive, Positive] = (0.9, 1.1)
    shift: Fraction = 0.1
    erase_p: Fraction = 0.5
    erase_area: tuple[Fraction, Fraction] = (0.02, 0.2)
    brightness: Fraction = 0.2
    contrast: Fraction = 0.2
    mixup_alpha: NonNeg = 0.0
    cutmix_alpha: NonNeg = 0.0

    def __post_init__(self) -> None:
        for key in ("scale", "erase_area"):
            low, high = getattr(self, key)
            if low > high:
                raise ValueError(f"{key} is a [low, high] range, got [{low}, {high}]")


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def geometric(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Random flip, rotation, isotropic scale and shift of a float batch (N, C, H, W) in one resampling."""
    n = x.shape[0]
    angle = _uniform(n, -cfg.rotate_deg, cfg.rotate_deg, g) * math.pi / 180
    scale = _uniform(n, *cfg.scale, g)
    flip = torch.where(torch.rand(n, generator=g) < cfg.hflip, -1.0, 1.0)
    tx = _uniform(n, -cfg.shift, cfg.shift, g) * 2
    ty = _uniform(n, -cfg.shift, cfg.shift, g) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def photometric(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Brightness (additive) and contrast (around each image's mean) jitter for inputs in [0, 1]."""
    n = x.shape[0]
    b = _uniform(n, -cfg.brightness, cfg.brightness, g).view(n, 1, 1, 1)
    c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean + b).clamp(0, 1)


def random_erase(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Erase one random rectangle per selected image with uniform noise (random erasing, Zhong et al.)."""
    n, _, h, w = x.shape
    area = _uniform(n, *cfg.erase_area, g) * h * w
    aspect = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), g))
    eh = (area * aspect).sqrt().clamp(1, h).long()
    ew = (area / aspect).sqrt().clamp(1, w).long()
    top = (torch.rand(n, generator=g) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=g) * (w - ew + 1)).long()
    chosen = torch.rand(n, generator=g) < cfg.erase_p
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    mask = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
            & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)) & chosen.view(n, 1, 1))
    noise = torch.rand(x.shape, generator=g, dtype=x.dtype)
    return torch.where(mask.unsqueeze(1), noise, x)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """The full train-time pipeline for a float batch in [0, 1]."""
    x = geometric(x, cfg, g)
    if cfg.brightness or cfg.contrast:
        x = photometric(x, cfg, g)
    if cfg.erase_p:
        x = random_erase(x, cfg, g)
    return x


def mix_batch(x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (chosen at random when both are on) on inputs and soft targets ``y`` (N, classes)."""
    use_mixup, use_cutmix = cfg.mixup_alpha > 0, cfg.cutmix_alpha > 0
    if not (use_mixup or use_cutmix):
        return x, y
    perm = torch.randperm(x.shape[0], generator=g)
    cutmix = use_cutmix and (not use_mixup or torch.rand(1, generator=g).item() < 0.5)
    alpha = cfg.cutmix_alpha if cutmix else cfg.mixup_alpha
    lam = _beta(alpha, g)
    if cutmix:
        _, _, h, w = x.shape
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(h, (1,), generator=g)), int(torch.randint(w, (1,), generator=g))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y + (1 - lam) * y[perm]


def _beta(alpha: float, g: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw seeded from ``g`` (torch.distributions cannot take a generator)."""
    seed = int(torch.randint(2**31 - 1, (1,), generator=g))
    return float(np.random.default_rng(seed).beta(alpha, alpha))
