"""Run a model package on face crops with ONNX Runtime: preprocessing from the card, batching, probabilities by name.

Inference needs no torch: ONNX Runtime + OpenCV + NumPy keep ``pip install ferkit`` light and fast to import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from ferkit.faces.enhance import apply_clahe
from ferkit.packages import GRAPH_NAME, ModelCard, read_card, resolve_package

TTA_MODES = ("none", "flip")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ModelRuntime:
    """One model package loaded into an ONNX Runtime session.

    ``threads`` bounds ONNX Runtime's intra-op threads (default: all cores); ``tta='flip'`` averages the
    probabilities of each crop and its mirror image, which costs 2x compute for typically +0.5-1 point accuracy.
    """

    def __init__(self, model: str | os.PathLike = "default", threads: int | None = None, tta: str = "none",
                 batch_size: int = 256) -> None:
        if tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {TTA_MODES}, not {tta!r}")
        self.folder: Path = resolve_package(model)
        self.card: ModelCard = read_card(self.folder)
        self.tta = tta
        self.batch_size = batch_size
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.folder / GRAPH_NAME), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        out_dim = self.session.get_outputs()[0].shape[-1]
        if isinstance(out_dim, int) and out_dim != len(self.card.labels):
            raise ValueError(f"{self.folder}: graph has {out_dim} outputs but the card lists {len(self.card.labels)} labels")

    @property
    def labels(self) -> list[str]:
        return self.card.labels

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 crops (HxW gray or HxWx3 RGB, any size) -> float32 (N, C, S, S) as the model was trained.

        A card with ``clahe: true`` gets CLAHE on each crop after the resize to the input size, exactly as
        training applied it to its images (:func:`ferkit.train.tensors.load_tensors`).
        """
        size, channels = self.card.input_size, self.card.channels
        batch = np.empty((len(crops), channels, size, size), dtype=np.float32)
        for i, crop in enumerate(crops):
            img = np.asarray(crop)
            if img.ndim == 3 and img.shape[2] == 4:
                img = img[..., :3]
            if channels == 1 and img.ndim == 3:
                img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            elif channels == 3 and img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
            if img.shape[:2] != (size, size):
                shrinking = img.shape[0] > size
                img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
            if self.card.clahe:
                img = apply_clahe(np.ascontiguousarray(img, dtype=np.uint8))
            img = img.reshape(size, size, channels).astype(np.float32) / 255.0
            batch[i] = ((img - self.card.mean) / self.card.std).transpose(2, 0, 1)
        return batch

    def predict_proba(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, len(labels)) in the card's label order; an empty input gives an empty array."""
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        out = []
        for start in range(0, len(crops), self.batch_size):
            x = self.preprocess(crops[start:start + self.batch_size])
            probs = softmax(self.session.run(None, {self.input_name: x})[0])
            if self.tta == "flip":
                probs = (probs + softmax(self.session.run(None, {self.input_name: x[..., ::-1].copy()})[0])) / 2
            out.append(probs)
        return np.concatenate(out).astype(np.float32)

    def predict(self, crops: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """One dict label -> probability per crop (labels by name, summing to 1)."""
        return [dict(zip(self.labels, map(float, row))) for row in self.predict_proba(crops)]
