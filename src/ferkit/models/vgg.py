"""ferkit's own VGG-style network for 48x48 faces: the strong from-scratch recipe on FER2013.

Why not a timm VGG: ImageNet VGGs assume 224x224 input and 4096-wide heads (130M+ parameters); at 48x48 a VGG with
four conv stages of two 3x3 convs each, BatchNorm, and a small flattened head is what reaches 70%+ from scratch
(Khaireddin & Chen 2021; Pramerdorfer & Kampel 2016), while staying a few MB.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ferkit.models.registry import register


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class FerVGG(nn.Module):
    """Stages of ``convs_per_stage`` 3x3 conv+BN+ReLU, each followed by 2x2 max-pooling, then a flattened head.

    The head keeps the spatial layout of the last feature map (flatten, not global pooling): at 48x48 input the map
    is 3x3, and *where* a feature fires (mouth vs brows) carries the expression.
    """

    def __init__(self, num_classes: int = 7, in_chans: int = 1, input_size: int = 48,
                 widths: Sequence[int] = (64, 128, 256, 512), convs_per_stage: int = 2, hidden: int = 256,
                 dropout: float = 0.4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        for w in widths:
            for _ in range(convs_per_stage):
                layers += _conv_bn_relu(c, w)
                c = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = input_size // 2 ** len(widths)
        if side < 1:
            raise ValueError(f"input_size {input_size} is too small for {len(widths)} pooling stages")
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c * side * side, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self.num_features = c
        self._layers_per_stage = 3 * convs_per_stage + 1
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def group_matcher(self, coarse: bool = False):
        """Parameter groups as timm defines them (used by phased training's ``last_n``): one per conv stage."""
        per_stage = self._layers_per_stage

        def stage_of(name: str) -> int:
            parts = name.split(".")
            return int(parts[1]) // per_stage if parts[0] == "features" else 1 << 20
        return stage_of


def _cam_layer(model: FerVGG) -> nn.Module:
    """The last ReLU of the next-to-last stage (12x12 at 48 px). Why not the last stage (6x6): with a flattened
    head, Grad-CAM's channel weights (the spatial mean of each channel's gradient) are a poor summary of a map that
    is max-pooled and flattened, and they can cancel to an all-negative, empty CAM (measured: the smiling face of
    photos/face_recognition__obama_and_biden.jpg got none there, and a clear one a stage earlier)."""
    per = model._layers_per_stage
    return model.features[-2 - per] if len(model.features) > per else model.features[-2]


register("fervgg", cam_layer=_cam_layer, min_input=16)(FerVGG)
