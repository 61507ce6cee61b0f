"""Seed 003's small CNN: the fastest model of the thesis, kept as ferkit's speed floor.

The thesis (section 5.3.4, after Lopes et al. 2017) gives: 32x32x3 input, "two sets of a convolutional layer
followed by a pooling layer, followed by flattening, dropout, and dense layers", 367,304 parameters, 8 classes.
The only layout of that shape with exactly 367,304 parameters is Lopes et al.'s: conv 5x5 x32 (valid), 2x2 max-pool,
conv 7x7 x64 (valid), 2x2 max-pool, flatten (4x4x64), dropout, dense 256, dense 8 — so that is what this builds,
with ReLU activations (Keras' usual choice; the thesis does not name them) and dropout 0.5 (not stated either).
Input size is free: the flattened width follows it; the smallest side that leaves a 1x1 map is 20 px.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ferkit.models.registry import register


def _out_side(side: int, kernels: Sequence[int]) -> int:
    for k in kernels:
        side = (side - k + 1) // 2
    return side


class SmallCNN(nn.Module):
    """Two (valid conv + ReLU + 2x2 max-pool) stages, flatten, dropout, dense + ReLU, dense classifier."""

    def __init__(self, num_classes: int = 8, in_chans: int = 3, input_size: int = 32,
                 widths: Sequence[int] = (32, 64), kernels: Sequence[int] = (5, 7), hidden: int = 256,
                 dropout: float = 0.5) -> None:
        super().__init__()
        if len(widths) != len(kernels):
            raise ValueError("widths and kernels must have the same length")
        side = _out_side(input_size, kernels)
        if side < 1:
            raise ValueError(f"input_size {input_size} is too small for kernels {tuple(kernels)}")
        layers: list[nn.Module] = []
        c = in_chans
        for w, k in zip(widths, kernels):
            layers += [nn.Conv2d(c, w, k), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * side * side, hidden),
                                  nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Parameter groups as timm defines them (used by phased training's ``last_n``): one per conv layer."""
        return {"blocks": r"^features\.(\d+)"}


# the last conv's ReLU, before its pooling: 8x8 at 32 px
register("small_cnn", cam_layer=lambda m: m.features[-2], min_input=20)(SmallCNN)
