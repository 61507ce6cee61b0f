"""Model architectures (torch, training side) and model packages (ONNX + card, run-time side)."""
