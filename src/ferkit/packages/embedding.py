"""Face embeddings from any model package: the penultimate layer, exposed as a second ONNX output.

Seed 004 (HSEmotion) uses the emotion network as a feature extractor: the D-dimensional input of its last linear
layer describes a face better for clip-level classifiers than the 7 probabilities do. No retraining is needed: the
graph is edited in memory (``onnx``) so the tensor that feeds the final Gemm/MatMul (after any int8
Quantize/Dequantize pair) becomes an output named ``embedding``, and a second ONNX Runtime session serves it. This
works for the shipped int8 default and for any package ``ferkit export`` writes. Callers get embeddings through
:meth:`ferkit.classify.Classifier.embed`.
"""

from __future__ import annotations

from pathlib import Path

from ferkit.errors import UserInputError, missing_extra
from ferkit.packages import GRAPH_NAME

PASS_THROUGH = {"QuantizeLinear", "DequantizeLinear", "Identity", "Softmax", "Cast", "Add"}
LINEAR = {"Gemm", "MatMul"}


def embedding_graph(model_bytes: bytes) -> tuple[bytes, str]:
    """The graph with its penultimate tensor added as output ``embedding``; returns (bytes, tensor name)."""
    try:
        import onnx
    except ImportError:
        raise missing_extra("video", "face embeddings (onnx graph editing)") from None
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    name = graph.output[0].name
    node = producer.get(name)
    while node is not None and node.op_type in PASS_THROUGH:
        # Add after MatMul is the bias: follow the non-constant input
        inputs = [i for i in node.input if i in producer] or list(node.input[:1])
        node = producer.get(inputs[0])
    if node is None or node.op_type not in LINEAR:
        raise UserInputError("this model's last layer is not a linear layer (Gemm/MatMul): no embedding to expose")
    tensor = node.input[0]
    if tensor not in {o.name for o in graph.output}:
        graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString(), tensor


def embedding_session(folder: Path):
    """(ONNX Runtime session, its input name, the embedding output's name) for a package folder's graph."""
    import onnxruntime as ort

    graph, tensor = embedding_graph((Path(folder) / GRAPH_NAME).read_bytes())
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    return session, session.get_inputs()[0].name, tensor
