"""Torch weights recovered from a model package's ONNX graph (for a package that lost its training checkpoint).

Why: Grad-CAM and class visualisation need the torch model, but the shipped default was exported to an int8 QDQ
graph and its training runs are gone. Its weights are all still in the graph: each ``DequantizeLinear`` on an
initializer gives back an fp32 tensor as ``(q - zero_point) * scale`` (per output channel), and the exporter kept
the torch names (``features.0.weight_quantized`` -> ``features.0.weight``). The exporter folded each BatchNorm into
the convolution or linear layer before it (their bias is then a tensor named ``<layer>.weight_bias`` that no torch
parameter has), so the folded weight goes into the layer and the BatchNorm is set to the identity (scale 1, shift =
the folded bias, mean 0, variance 1 - eps): the torch model keeps its architecture and state_dict keys, and in eval
mode computes what the graph computes before its activations are quantised.

What cannot come back: the activation quantisation (the graph rounds every activation to uint8), so the recovered
fp32 model agrees with the int8 graph closely but not exactly; ``benchmarks/recover_default_weights.py`` measures
how closely on FER2013 PrivateTest and records it in the card.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

QUANTIZED = "_quantized"
FOLDED_BIAS = "_bias"


def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    """``(q - zero_point) * scale``, per channel along ``axis`` when scale is a vector (ONNX DequantizeLinear)."""
    zp = np.zeros_like(scale, dtype=np.int64) if zero_point is None else zero_point.astype(np.int64)
    if scale.ndim == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q.astype(np.int64) - zp) * scale.astype(np.float64)).astype(np.float32)


def graph_tensors(onnx_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every constant tensor of the graph by name, fp32: plain initializers, and the outputs of DequantizeLinear
    nodes whose inputs are initializers (the int8 weights and int32 biases of a QDQ graph), dequantised."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    tensors = {name: a.astype(np.float32) for name, a in init.items() if a.dtype.kind == "f"}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in init:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        zero_point = init.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        tensors[node.output[0]] = _dequantize(init[node.input[0]], init[node.input[1]], zero_point, axis)
    return tensors


def _layer_params(onnx_path: str | os.PathLike) -> list[tuple[str, np.ndarray, str, np.ndarray | None]]:
    """(torch weight name, weight, bias tensor name, bias) for every Conv and Gemm node, in graph order."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    tensors = graph_tensors(onnx_path)
    producer = {out: node for node in graph.node for out in node.output}
    layers = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        w_name = node.input[1]
        dq = producer.get(w_name)
        source = dq.input[0] if dq is not None and dq.op_type == "DequantizeLinear" else w_name
        torch_name = source.removesuffix(QUANTIZED)
        b_name = node.input[2] if len(node.input) > 2 else ""
        layers.append((torch_name, tensors[w_name], b_name, tensors.get(b_name)))
    return layers


def state_dict_from_graph(onnx_path: str | os.PathLike, model: nn.Module) -> dict[str, torch.Tensor]:
    """A state_dict for ``model`` (the package's architecture, freshly built) from the weights in its ONNX graph.

    Raises ValueError when a graph weight has no place in the model or a model tensor is left without a value
    (another architecture, or an exporter that renamed the weights): a half-filled model must never load.
    """
    own = model.state_dict()
    modules = [name for name, _ in model.named_modules()]
    by_name = dict(model.named_modules())
    out: dict[str, torch.Tensor] = {}
    for w_key, weight, b_name, bias in _layer_params(onnx_path):
        if w_key not in own or tuple(own[w_key].shape) != weight.shape:
            raise ValueError(f"graph weight {w_key} {weight.shape} does not fit the model "
                             f"({tuple(own[w_key].shape) if w_key in own else 'no such tensor'})")
        out[w_key] = torch.from_numpy(weight)
        if bias is None:
            continue
        layer = w_key.removesuffix(".weight")
        if b_name == f"{layer}.bias":
            out[b_name] = torch.from_numpy(bias)
            continue
        # a folded BatchNorm: the module right after the layer is the BatchNorm the exporter folded into it
        follower = modules[modules.index(layer) + 1] if modules.index(layer) + 1 < len(modules) else ""
        bn = by_name.get(follower)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"graph has a folded bias {b_name} but {layer} is not followed by a BatchNorm")
        out[f"{follower}.weight"] = torch.ones_like(own[f"{follower}.weight"])
        out[f"{follower}.bias"] = torch.from_numpy(bias)
        out[f"{follower}.running_mean"] = torch.zeros_like(own[f"{follower}.running_mean"])
        out[f"{follower}.running_var"] = torch.full_like(own[f"{follower}.running_var"], 1.0 - bn.eps)
        if f"{follower}.num_batches_tracked" in own:
            out[f"{follower}.num_batches_tracked"] = own[f"{follower}.num_batches_tracked"].clone()
    missing = [k for k in own if k not in out]
    if missing:
        raise ValueError(f"the graph gives no value for {len(missing)} model tensors (e.g. {', '.join(missing[:3])})")
    return out
