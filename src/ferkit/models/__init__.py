"""Model architectures (torch, the training side): the registry and the modules that register into it.

Importing this package registers every architecture (as timm's ``models/__init__`` does); the run-time side, model
packages (ONNX + card), lives in :mod:`ferkit.packages` and needs no torch.
"""

from ferkit.models import autoencoder, resmasknet, small_cnn, timm_zoo, vgg  # noqa: F401  (they register themselves)
from ferkit.models.registry import (
    arch_args,
    available,
    build_model,
    cam_layer,
    check_args,
    min_input_size,
    register,
)

__all__ = ["arch_args", "available", "build_model", "cam_layer", "check_args", "min_input_size", "register"]
