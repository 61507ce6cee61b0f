"""Export a trained torch model to a model package: ``model.onnx`` + ``card.json`` + ``weights.safetensors`` (the
fp32 state_dict, for Grad-CAM and class visualisation; see :mod:`ferkit.packages`).

The graph takes ``input`` (N, C, H, W) float32 — N dynamic, C/H/W from the card — already normalised as the card
says, and returns ``logits`` (N, classes); the runtime applies the softmax, so the graph stays a pure function of the
weights and ensembles can average logits or probabilities as they choose.

Exporter: torch's ``dynamo=True`` exporter (``torch.export`` + onnxscript), the default and maintained one since
torch 2.9. The deprecated TorchScript exporter is 5-10x faster but cannot export some of ferkit's models: timm's
VGG head adaptively pools a 1x1 map to 7x7 at face-sized inputs, which it rejects ("output size that are not
factor of input size"). onnxscript comes with the ``train`` extra.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ferkit.io import atomic_write
from ferkit.models.from_package import save_torch_weights
from ferkit.packages import GRAPH_NAME, ModelCard, PackageError, write_card

OPSET = 18


def _fp32_eval_copy(model: nn.Module) -> nn.Module:
    """The model in eval mode and float32, without changing the caller's module when it is not already so."""
    if any(p.dtype != torch.float32 for p in model.parameters()):
        model = copy.deepcopy(model).float()
    return model.eval()


def export_onnx(model: nn.Module, card: ModelCard, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/model.onnx``, ``out_dir/weights.safetensors`` (fp32) and ``out_dir/card.json`` (each
    atomically, the card last); returns the graph's path.

    ``card.parameters`` and ``card.ferkit_version`` are filled in when left empty. Raises PackageError when the
    model's output width does not match ``card.labels``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    net = _fp32_eval_copy(model)
    try:
        x = torch.randn(2, card.channels, card.input_size, card.input_size)
        with torch.no_grad():
            logits = net(x)
        if logits.ndim != 2 or logits.shape[1] != len(card.labels):
            raise PackageError(f"model outputs shape {tuple(logits.shape)} but the card lists {len(card.labels)} "
                               f"labels {card.labels}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atomic_write(out / GRAPH_NAME, lambda tmp: torch.onnx.export(
                net, (x,), str(tmp), input_names=["input"], output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, external_data=False,
                opset_version=OPSET, verbose=False))
        save_torch_weights(net, out)
    finally:
        model.train(was_training)
    if not card.parameters:
        card.parameters = sum(p.numel() for p in model.parameters())
    if not card.ferkit_version:
        from ferkit import __version__

        card.ferkit_version = __version__
    write_card(out, card)
    return out / GRAPH_NAME


def check_parity(model: nn.Module, onnx_path: str | os.PathLike, n: int = 8, seed: int = 0) -> float:
    """Max abs difference between torch (fp32, eval) and onnxruntime logits on ``n`` random normal inputs."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [int(d) for d in inp.shape[1:]]
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    net = _fp32_eval_copy(model)
    try:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            ref = net(x).numpy()
    finally:
        model.train(was_training)
    got = sess.run(["logits"], {inp.name: x.numpy()})[0]
    return float(np.abs(ref - got).max())
