"""Class visualisation (seed 003, van der Weel 2019, 5.6): an input optimised to maximise one class's output.

Seed 003 used Lucid for this; ferkit does the same directly in torch, for every label of a model at once (one
batch, one row per label): start from a flat grey image with a little seeded noise and, for ``steps`` Adam steps,
raise the class's logit minus an L2 penalty (keeps contrast in range) and a total-variation penalty (suppresses the
high-frequency patterns that fool a net without looking like anything), with random jitter (shifting the image a
few pixels each step, so the result does not depend on exact pixel positions). Pixels stay within what a real
image can hold. The grid shows what each class's output responds to: mouths with teeth for happy, wide eyes for
surprise, in the thesis's MobileNet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ferkit.explain.members import load_members
from ferkit.explain.overlay import FONT

TILE = 192
"""Side of each label's tile in the grid (a 48 px input is drawn 4x, nearest neighbour)."""


@dataclass
class ClassImage:
    label: str
    image: np.ndarray
    """uint8, input_size x input_size (gray) or x 3 (RGB): the optimised input, as the model sees it."""
    start_probability: float
    probability: float


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def optimise_classes(model: torch.nn.Module, labels: list[str], channels: int, size: int, mean: float, std: float,
                     steps: int = 128, lr: float = 0.05, l2: float = 0.05, tv: float = 2.0, jitter: int = 2,
                     seed: int = 0) -> list[ClassImage]:
    """One optimised input per label (all labels in one batch); returns them with the class's probability at the
    start and at the end. The image is optimised at half resolution and upsampled bilinearly (a smoothness prior,
    as Lucid's parameterisations are), then penalised as the module docstring says."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    lo, hi = (0 - mean) / std, (1 - mean) / std
    low = max(4, size // 2)
    z = ((0.5 - mean) / std + 0.05 * torch.randn(len(labels), channels, low, low, generator=gen)).clamp(lo, hi)
    z.requires_grad_(True)

    def image() -> torch.Tensor:
        return F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False)

    target = torch.arange(len(labels))
    was_training = model.training
    model.eval()
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            start = torch.softmax(model(image()), 1)[target, target]
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(steps):
            dx, dy = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
            x = image()
            logits = model(torch.roll(x, shifts=(dy, dx), dims=(2, 3)))
            loss = -logits[target, target].mean() + l2 * (x ** 2).mean() + tv * _total_variation(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                z.clamp_(lo, hi)
        with torch.no_grad():
            x = image()
            end = torch.softmax(model(x), 1)[target, target]
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    pixels = ((x.detach() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [ClassImage(lab, pixels[i][..., 0] if channels == 1 else pixels[i], float(start[i]), float(end[i]))
            for i, lab in enumerate(labels)]


def class_grid(images: list[ClassImage], title: str, columns: int = 4) -> np.ndarray:
    """The tiles of ``images`` in a grid (RGB uint8), each captioned with its label and probability."""
    rows = -(-len(images) // columns)
    cap = 40
    grid = np.full((rows * (TILE + cap) + 30, columns * TILE, 3), 255, np.uint8)
    cv2.putText(grid, title, (6, 20), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for i, ci in enumerate(images):
        r, c = divmod(i, columns)
        tile = cv2.resize(ci.image, (TILE, TILE), interpolation=cv2.INTER_NEAREST)
        if tile.ndim == 2:
            tile = cv2.cvtColor(tile, cv2.COLOR_GRAY2RGB)
        y, x = 30 + r * (TILE + cap), c * TILE
        grid[y:y + TILE, x:x + TILE] = tile
        cv2.putText(grid, ci.label, (x + 4, y + TILE + 16), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(grid, f"p {ci.start_probability:.2f} -> {ci.probability:.2f}", (x + 4, y + TILE + 33), FONT,
                    0.42, (60, 60, 60), 1, cv2.LINE_AA)
    return grid


def class_images(model: str | os.PathLike = "default", steps: int = 128, seed: int = 0
                 ) -> dict[str, list[ClassImage]]:
    """The optimised input of every label, per member model (a plain package: one entry, named after it)."""
    _, members = load_members(model)
    return {m.name: optimise_classes(m.model, m.card.labels, m.card.channels, m.card.input_size, m.card.mean,
                                     m.card.std, steps=steps, seed=seed) for m in members}
