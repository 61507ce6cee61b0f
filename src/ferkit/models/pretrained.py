"""Load a local backbone state_dict (``pretrained_path: FILE``) into a freshly built network.

No network access: ferkit never downloads weights at run time (DESIGN.md), so transfer learning starts from a file
the user already has — a timm or torchvision ImageNet checkpoint, or a backbone from an earlier ferkit run. The
loader is strict about everything except what must differ between the file and a FER model:

- the classifier (1000 ImageNet classes vs 7/8 emotions) is dropped from the file and left freshly initialised;
- the first convolution is adapted from the file's channel count to the model's (RGB -> gray sums the RGB kernels,
  timm's ``adapt_input_conv``), so ImageNet weights serve grayscale FER2013 faces.

Any other missing, unexpected or mis-shaped key is an error: a silently half-loaded backbone trains "fine" and
just ends up a few points worse, which nobody ever traces back.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

_WRAPPER_KEYS = ("state_dict", "model", "net", "model_state_dict")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a torch ``.pth/.pt/.bin`` file (loaded with ``weights_only=True``).

    Checkpoints that wrap the weights (``{"state_dict": ...}``, ``{"net": ...}``) are unwrapped, and the
    ``module.`` prefix that DataParallel adds is stripped.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pretrained_path {str(p)!r}: no such file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: object = load_file(str(p))
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors, non-tensor payloads
            raise ValueError(f"pretrained_path {str(p)!r}: not a readable torch state_dict ({exc})") from None
    for key in _WRAPPER_KEYS:
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"pretrained_path {str(p)!r}: expected a mapping of parameter names to tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_backbone(model: nn.Module, path: str | os.PathLike, first_conv: str | None,
                  ignore_prefixes: Iterable[str] = ()) -> None:
    """Load ``path`` into ``model``; keys under ``ignore_prefixes`` (the classifier) are skipped on both sides.

    ``first_conv`` names the first convolution (e.g. ``"conv1"``); its weight is adapted to the model's input
    channels when the file has a different count.
    """
    from timm.models import adapt_input_conv

    ignore = tuple(p if p.endswith(".") else p + "." for p in ignore_prefixes)
    sd = {k: v for k, v in read_state_dict(path).items() if not k.startswith(ignore)}
    own = model.state_dict()
    if first_conv is not None:
        key = first_conv + ".weight"
        if key in sd and key in own and sd[key].shape[1] != own[key].shape[1]:
            w, want = sd[key].float(), own[key].shape[1]
            if w.shape[1] == 1:  # a gray backbone into a colour model: spread the kernel over the channels
                w = w.repeat(1, want, 1, 1) / want
            else:
                w = adapt_input_conv(want, w)
            sd[key] = w.to(sd[key].dtype)
    missing = [k for k in own if k not in sd and not k.startswith(ignore)]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sd
                  if k in own and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        problems.append(f"{len(mismatched)} of another shape (e.g. {', '.join(mismatched[:3])})")
    if problems:
        raise ValueError(f"pretrained_path {str(path)!r} does not fit {type(model).__name__}: "
                         + "; ".join(problems) + ". The file must hold this architecture's backbone in timm's "
                         "key layout (timm.create_model(name).state_dict()).")
    model.load_state_dict(sd, strict=False)
