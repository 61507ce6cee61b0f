"""The papers' ImageNet backbones, built by timm under short names (``resnet18``, ``mobilenetv2``, ...).

Why timm: one well-kept library gives every backbone the five papers use, with ``in_chans=1`` (grayscale FER2013)
and any class count handled the same way, instead of 25 hand-copied networks. Which paper uses which:

- seed 000: mobilenetv2, inception_v3, resnetv2_50 (pre-activation ResNet, the Keras ResNet50V2 the paper used),
  each with the paper's custom head (``head: seed000``);
- seed 001: resnet18/34/50/101/152, resnext50 (32x4d), resnext101 (32x8d: the torchvision model the paper
  fine-tuned), wide_resnet50/101 (x2), densenet121/161/169/201, vgg11/13/16/19 (the batch-norm variants);
- seed 003: vgg16, mobilenetv1 (the original MobileNet, not V2: the thesis says V2 did worse for them), xception;
- seed 004: mobilenetv1, efficientnet_b0, rexnet_150;
- seed 002's baseline table: efficientnet_b2 (and resnet34/152, densenet121, inception_v3, vgg19).

Minimum input sizes (``build_model`` raises ValueError below them): 32 px for every backbone except inception_v3.
All of them downsample by 32 in five stages; below 32 px the deepest stage(s) see a 1x1 map built mostly from zero
padding, so the net "runs" but its last blocks learn nothing from the face (timm's VGG head refuses outright).
inception_v3 needs 75 px: its stem uses unpadded stride-2 convolutions and pools, and 75 is the smallest side that
still leaves a 1x1 map at the end (torchvision's weights declare the same ``min_size``).

Xception: ``xception`` is timm's ``legacy_xception``, not ``xception41``. ``legacy_xception`` is Chollet's original
Xception (entry flow with max-pooling, 8 middle-flow blocks, exit flow; 22.9M parameters at 1000 classes, the
count seed 003 quotes), i.e. the same network as ``keras.applications.Xception`` that the thesis used.
``xception41`` is the "aligned Xception" of DeepLabv3+: strided depthwise convolutions instead of max-pooling, an
extra BN+ReLU after every depthwise conv and a different depth — a later, different network (27M parameters).

Heads (``head`` arg): ``linear`` is timm's own (global average pool + one Linear). ``seed000`` is seed 000's
custom head: average pooling, flatten, then three blocks of Fully-Connected + Dropout + BatchNorm, then the
classifier (:class:`Seed000Head`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ferkit.models.pretrained import load_backbone
from ferkit.models.registry import register


@dataclass(frozen=True)
class ZooEntry:
    timm_name: str
    min_input: int = 32


ZOO: dict[str, ZooEntry] = {
    "mobilenetv1": ZooEntry("mobilenetv1_100"),
    "mobilenetv2": ZooEntry("mobilenetv2_100"),
    "inception_v3": ZooEntry("inception_v3", min_input=75),
    "resnet18": ZooEntry("resnet18"),
    "resnet34": ZooEntry("resnet34"),
    "resnet50": ZooEntry("resnet50"),
    "resnet101": ZooEntry("resnet101"),
    "resnet152": ZooEntry("resnet152"),
    "resnetv2_50": ZooEntry("resnetv2_50"),
    "resnext50": ZooEntry("resnext50_32x4d"),
    "resnext101": ZooEntry("resnext101_32x8d"),
    "wide_resnet50": ZooEntry("wide_resnet50_2"),
    "wide_resnet101": ZooEntry("wide_resnet101_2"),
    "densenet121": ZooEntry("densenet121"),
    "densenet161": ZooEntry("densenet161"),
    "densenet169": ZooEntry("densenet169"),
    "densenet201": ZooEntry("densenet201"),
    "vgg11": ZooEntry("vgg11_bn"),
    "vgg13": ZooEntry("vgg13_bn"),
    "vgg16": ZooEntry("vgg16_bn"),
    "vgg19": ZooEntry("vgg19_bn"),
    "xception": ZooEntry("legacy_xception"),
    "efficientnet_b0": ZooEntry("efficientnet_b0"),
    "efficientnet_b2": ZooEntry("efficientnet_b2"),
    "rexnet_150": ZooEntry("rexnet_150"),
}

SEED000_WIDTHS = (1024, 512, 256)
"""Seed 000 gives the layer types of its head but its widths only in figures the text lacks; 1024-512-256 halves
down from MobileNetV2's 1280 features to a few hundred before a 7-way classifier, the usual Keras-tutorial shape."""
SEED000_DROPOUT = 0.3


class Seed000Head(nn.Sequential):
    """Seed 000's head on pooled backbone features: ``len(widths)`` x (Linear + ReLU, Dropout, BatchNorm1d), Linear.

    The paper added it because MobileNetV2 with a single classifier layer underfit FER data; the BatchNorm after
    each dropout keeps the wide FC stack trainable at Adam's small fine-tuning learning rates.
    """

    def __init__(self, in_features: int, num_classes: int, widths: Sequence[int] = SEED000_WIDTHS,
                 dropout: float = SEED000_DROPOUT) -> None:
        layers: list[nn.Module] = []
        c = in_features
        for w in widths:
            layers += [nn.Linear(c, w), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.BatchNorm1d(w)]
            c = w
        layers.append(nn.Linear(c, num_classes))
        super().__init__(*layers)


class BackboneWithHead(nn.Module):
    """A timm backbone that returns pooled, flattened features (``num_classes=0``) followed by a separate head."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_timm(timm_name: str, num_classes: int, in_chans: int = 1, input_size: int = 48, head: str = "linear",
               head_widths: Sequence[int] = SEED000_WIDTHS, head_dropout: float = SEED000_DROPOUT,
               pretrained_path: str | None = None, drop_rate: float | None = None,
               drop_path_rate: float | None = None) -> nn.Module:
    """Build ``timm_name`` with ``head`` (``linear`` or ``seed000``), optionally loading a local backbone file.

    ``drop_rate`` and ``drop_path_rate`` go to ``timm.create_model`` when set (named here, not passed through as
    ``**kwargs``, so a misspelt recipe argument is caught by :func:`ferkit.models.registry.check_args`).
    ``input_size`` only matters for the registry's minimum-size check: these networks end in global pooling and
    accept any size.
    """
    import timm

    timm_kwargs = {k: v for k, v in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)) if v is not None}

    if head not in ("linear", "seed000"):
        raise ValueError(f"head must be 'linear' or 'seed000', not {head!r}")
    if head == "linear":
        model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                  **timm_kwargs)
        backbone = model
    else:
        backbone = timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="avg",
                                     in_chans=in_chans, **timm_kwargs)
        features = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        model = BackboneWithHead(backbone, Seed000Head(features, num_classes, head_widths, head_dropout))
    if pretrained_path:
        cfg = backbone.pretrained_cfg
        classifier = cfg.get("classifier") or "fc"
        classifiers = [classifier] if isinstance(classifier, str) else list(classifier)
        # inception_v3 checkpoints from torchvision carry the auxiliary classifier timm does not build.
        load_backbone(backbone, pretrained_path, cfg.get("first_conv"), ignore_prefixes=classifiers + ["AuxLogits"])
    return model


CAM_MAX_REDUCTION = 16
"""Grad-CAM looks at the deepest stage timm lists in ``feature_info`` whose stride is at most this (see
:func:`ferkit.models.registry.register` for why not the stride-32 one)."""


def timm_cam_layer(model: nn.Module) -> nn.Module:
    """The Grad-CAM target of a :func:`build_timm` model, from timm's own map of its stages (``feature_info``);
    a stage that ends in max-pooling (VGG) is taken before its pool."""
    backbone = model.backbone if isinstance(model, BackboneWithHead) else model
    stages = [f for f in backbone.feature_info if f["reduction"] <= CAM_MAX_REDUCTION]
    name = stages[-1]["module"]
    modules = dict(backbone.named_modules())
    if isinstance(modules[name], nn.MaxPool2d):
        names = list(modules)
        name = names[names.index(name) - 1]
    return modules[name]


for _name, _entry in ZOO.items():
    register(_name, cam_layer=timm_cam_layer, min_input=_entry.min_input)(partial(build_timm, _entry.timm_name))
