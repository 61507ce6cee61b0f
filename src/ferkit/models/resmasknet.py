"""Seed 002's Residual Masking Network (Pham, Vu, Tran 2020): ResNet34 whose four stages are each refined by a U-Net.

Each Residual Masking Block runs a ResNet34 residual layer R, then a Masking Block M (a small U-Net) on its output,
and combines them as the paper's Formula 1, F_N = F_R + F_R * F_M with F_R = R(F) and F_M = M(F_R) in [0, 1]:
the mask re-weights features element-wise ("attention residual learning": a mask of 0 keeps F_R, it never erases
it). The paper gives the U-Net only as a figure, and says its number of pooling/upsampling levels depends on the
feature size; the authors' released code (the one behind the paper's 74.14% on FER2013) fixes the details this
module follows:

- depth 4, 3, 2, 1 for the stages at 56, 28, 14, 7 px (224 px input). At other input sizes the same per-stage
  depths are used, lowered only where the feature map is too small to pool that often (a 1 px map cannot be
  pooled), so a 48 px face gets the same 4/3/2/1 masks on 12/6/3/2 px maps;
- each U-Net level is a ResNet basic block that doubles the channels going down (C -> 2C -> 4C ...), 2x2
  max-pooling between levels, 2x2 transposed-conv upsampling + BatchNorm + ReLU, skip concatenation, and a final
  basic block back to C channels. The masks hold most of the weights: 137.8M in all at 3 channels / 7 classes
  (ResNet34 alone: 21.3M). The paper's Table II says 142.9M; the 5.1M difference is exactly the released code's
  1x1 shortcut convolutions, which it registers twice (as ``downsampleN`` and inside each block) and so counts
  twice in a state_dict — the network is the same;
- the [0, 1] activation is a softmax across channels (``mask_activation="softmax"``, as in the released code);
  ``"sigmoid"`` is the other reading of the paper's "[0, 1]" and is available.

Deviation: transposed convolutions are given the skip connection's size, so odd feature sizes (3 px, 7 px) work;
the released code assumes even sizes. The backbone is timm's ``resnet34``, so ``pretrained_path`` takes an
ImageNet ResNet34 file (timm/torchvision key layout; the masks and classifier stay freshly initialised).
Minimum input: 32 px (a 1x1 map after the last stage).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ferkit.models.registry import register

PAPER_DEPTHS = (4, 3, 2, 1)


def _basic_block(c_in: int, c_out: int) -> nn.Module:
    from timm.models.resnet import BasicBlock

    down = None if c_in == c_out else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
    return BasicBlock(c_in, c_out, downsample=down)


class _Up(nn.Module):
    """2x upsampling by transposed conv (+BN+ReLU) to exactly the size of the skip connection it meets."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.post = nn.Sequential(nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return self.post(self.conv(x, output_size=list(size)))


class MaskingBlock(nn.Module):
    """U-Net M of ``depth`` levels on C channels, returning a same-shape mask F_M with values in [0, 1]."""

    def __init__(self, channels: int, depth: int, activation: str = "softmax") -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"masking depth must be >= 1, got {depth}")
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"mask_activation must be 'softmax' or 'sigmoid', not {activation!r}")
        self.activation = activation
        f = [channels * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList(_basic_block(f[i], f[i + 1]) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(_Up(f[i + 1], f[i]) for i in range(depth - 1, 0, -1))
        self.merge = nn.ModuleList(_basic_block(f[i + 1], f[i]) for i in range(depth - 1, 0, -1))
        self.out = _basic_block(f[1], f[0])
        for m in self.modules():
            if hasattr(m, "zero_init_last"):
                m.zero_init_last()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            skip = skips.pop()
            x = merge(torch.cat([up(x, skip.shape[-2:]), skip], dim=1))
        x = self.out(x)
        return torch.softmax(x, dim=1) if self.activation == "softmax" else torch.sigmoid(x)


class ResMaskingBlock(nn.Module):
    """Residual layer R plus masking block M: F_N = F_R + F_R * M(F_R) (paper's Formula 1)."""

    def __init__(self, residual: nn.Module, mask: MaskingBlock) -> None:
        super().__init__()
        self.residual = residual
        self.mask = mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f_r = self.residual(x)
        return f_r + f_r * self.mask(f_r)


def stage_sides(input_size: int) -> list[int]:
    """Feature-map sides after ResNet34's stem (stride 4) and each of its four stages (strides 1, 2, 2, 2)."""
    side = (input_size + 2 * 3 - 7) // 2 + 1          # conv 7x7, stride 2, padding 3
    side = (side + 2 * 1 - 3) // 2 + 1                # max-pool 3x3, stride 2, padding 1
    sides = [side]
    for _ in range(3):
        side = (side + 2 * 1 - 3) // 2 + 1            # 3x3 stride-2 conv, padding 1
        sides.append(side)
    return sides


def mask_depths(input_size: int, depths: Sequence[int] = PAPER_DEPTHS) -> list[int]:
    """U-Net depth per stage: the requested depth, capped at 1 + log2(side) so a map is never pooled below 1 px."""
    return [min(d, side.bit_length()) for d, side in zip(depths, stage_sides(input_size))]


class ResMaskNet(nn.Module):
    """ResNet34 stem and stages, each stage wrapped in a :class:`ResMaskingBlock`, then avg-pool, (dropout), FC."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, input_size: int = 48,
                 depths: Sequence[int] = PAPER_DEPTHS, mask_activation: str = "softmax",
                 dropout: float = 0.0, pretrained_path: str | None = None) -> None:
        super().__init__()
        import timm

        if len(depths) != 4:
            raise ValueError(f"depths needs one U-Net depth per ResNet stage (4), got {list(depths)}")
        backbone = timm.create_model("resnet34", pretrained=False, num_classes=0, in_chans=in_chans)
        if pretrained_path:
            from ferkit.models.pretrained import load_backbone

            load_backbone(backbone, pretrained_path, "conv1", ignore_prefixes=["fc"])
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.act1, backbone.maxpool)
        self.depths = mask_depths(input_size, depths)
        layers = [backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
        widths = [64, 128, 256, 512]
        self.stages = nn.Sequential(*(ResMaskingBlock(layer, MaskingBlock(w, d, mask_activation))
                                      for layer, w, d in zip(layers, widths, self.depths)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.fc(self.drop(x))

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Parameter groups as timm defines them (used by phased training's ``last_n``): stem, then each
        residual masking stage (ResNet34 layer + its U-Net mask)."""
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)"}


# the third residual masking stage (stride 16): 3x3 at 48 px, where the fourth is 2x2
register("resmasknet", cam_layer=lambda m: m.stages[-2], min_input=32)(ResMaskNet)
