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
from onnxruntime.capi import onnxruntime_pybind11_state as ortstate

from ferkit.calibration import apply as apply_calibration
from ferkit.errors import UserInputError
from ferkit.faces.enhance import apply_clahe
from ferkit.packages import GRAPH_NAME, ModelCard, PackageError, read_card, resolve_package

TTA_MODES = ("none", "flip", "tencrop")
"""Test-time augmentation: ``none`` (the crop alone), ``flip`` (the crop and its mirror image, averaged),
``tencrop`` (the crop resized TENCROP_SCALE times larger, its four corners and centre at the model's input size,
and their five mirrors: ten views averaged)."""

DEFAULT_TTA = "flip"
"""What every command and the Python API use unless told otherwise: on FER2013 PrivateTest flip adds 0.7 points of
accuracy to the default model for about 2 ms per photo beside ~55 ms of face detection (docs/BENCHMARKS.md), and
evaluate must score what analyze does."""

TENCROP_SCALE = 1.125
"""Ten-crop's enlargement: 48 px crops are taken from a 54 px resize (a 6 px shift between corner and centre)."""


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


_ORT_LOAD_ERRORS = (ortstate.Fail, ortstate.InvalidArgument, ortstate.InvalidGraph, ortstate.InvalidProtobuf,
                    ortstate.NoModel, ortstate.NoSuchFile, ortstate.NotImplemented, ortstate.RuntimeException)
"""What ONNX Runtime raises for a graph file it cannot load (its exception types derive from Exception only)."""


def open_session(folder: Path, card: ModelCard, options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session for a package's graph, checked against its card when the package loads.

    Why here and not at the first batch: an empty, truncated or corrupt ``model.onnx``, or a card whose input size,
    channels or label count disagree with the graph, would otherwise fail deep inside ONNX Runtime on the first
    image (or, for a label count, mislabel every face), so each is one PackageError line naming the file.
    """
    graph = folder / GRAPH_NAME
    if graph.stat().st_size == 0:
        raise PackageError(f"{graph}: the graph file is empty; re-export the package (ferkit export) or copy it again")
    try:
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except _ORT_LOAD_ERRORS as exc:
        reason = str(exc).split("failed:", 1)[-1].strip().splitlines()[0]
        raise PackageError(f"{graph}: not a readable ONNX graph, truncated or corrupt ({reason}); re-export the "
                           f"package (ferkit export) or copy it again") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise PackageError(f"{graph}: expected one input of shape (N, C, H, W), the graph has "
                           f"{[tuple(i.shape) for i in inputs]}")
    _, channels, height, width = inputs[0].shape
    expected = {"channels": (channels, card.channels), "height": (height, card.input_size),
                "width": (width, card.input_size)}
    for what, (got, want) in expected.items():
        if isinstance(got, int) and got != want:
            raise PackageError(f"{folder}: the card says {card.channels} channel(s) of {card.input_size}x"
                               f"{card.input_size}, but the graph's input is {tuple(inputs[0].shape)} ({what} {got}); "
                               f"fix card.json or re-export the package")
    out_dim = outputs[0].shape[-1] if outputs and outputs[0].shape else None
    if isinstance(out_dim, int) and out_dim != len(card.labels):
        raise PackageError(f"{folder}: graph has {out_dim} outputs but the card lists {len(card.labels)} labels "
                           f"({', '.join(card.labels)}); fix card.json or re-export the package")
    return session


def check_tta(tta: str) -> str:
    if tta not in TTA_MODES:
        raise UserInputError(f"tta must be one of {', '.join(TTA_MODES)}, not {tta!r}")
    return tta


def tencrop_views(x: np.ndarray, size: int) -> list[np.ndarray]:
    """The ten views of a preprocessed batch (N, C, S', S'): four size x size corners, the centre, and the five
    mirrored; each (N, C, size, size)."""
    big = x.shape[-1]
    lo, mid = big - size, (big - size) // 2
    corners = [(0, 0), (0, lo), (lo, 0), (lo, lo), (mid, mid)]
    views = [x[..., y:y + size, c:c + size] for y, c in corners]
    return views + [v[..., ::-1] for v in views]


def preprocess(crops: Sequence[np.ndarray], card: ModelCard, size: int | None = None) -> np.ndarray:
    """uint8 crops (HxW gray or HxWx3 RGB, any size) -> float32 (N, C, S, S) as the model was trained (S: the card's
    input size unless ``size`` is given, as ten-crop does).

    A card with ``clahe: true`` gets CLAHE on each crop after the resize to the input size, exactly as
    training applied it to its images (:func:`ferkit.train.tensors.load_tensors`).
    """
    size, channels = size or card.input_size, card.channels
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
        if card.clahe:
            img = apply_clahe(np.ascontiguousarray(img, dtype=np.uint8))
        img = img.reshape(size, size, channels).astype(np.float32) / 255.0
        batch[i] = ((img - card.mean) / card.std).transpose(2, 0, 1)
    return batch


def tta_views(crops: Sequence[np.ndarray], card: ModelCard, tta: str) -> list[np.ndarray]:
    """The preprocessed views of a batch whose probabilities a TTA mode averages: [x] for none, [x, mirrored x] for
    flip, the ten views of :func:`tencrop_views` for tencrop. Shared by every classifier (ONNX or torch)."""
    if check_tta(tta) == "tencrop":
        return tencrop_views(preprocess(crops, card, round(card.input_size * TENCROP_SCALE)), card.input_size)
    x = preprocess(crops, card)
    return [x, x[..., ::-1]] if tta == "flip" else [x]


class ModelRuntime:
    """One model package loaded into an ONNX Runtime session.

    ``threads`` bounds ONNX Runtime's intra-op threads (default: all cores); ``tta`` (one of TTA_MODES) is the
    default test-time augmentation of :meth:`predict_proba`: 'flip' costs 2x compute, 'tencrop' 10x. The card's
    calibration for the TTA mode of each call (``ferkit calibrate``) is applied to every output unless
    ``calibrated=False`` (what fitting a calibration, and distillation, need: the model's own probabilities).
    """

    def __init__(self, model: str | os.PathLike = "default", threads: int | None = None, tta: str = "none",
                 batch_size: int = 256, calibrated: bool = True) -> None:
        check_tta(tta)
        self.folder: Path = resolve_package(model)
        self.card: ModelCard = read_card(self.folder)
        self.tta = tta
        self.calibration = self.card.calibration if calibrated else {}
        self.batch_size = batch_size
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = open_session(self.folder, self.card, options)
        self.input_name = self.session.get_inputs()[0].name

    @property
    def labels(self) -> list[str]:
        return self.card.labels

    def preprocess(self, crops: Sequence[np.ndarray], size: int | None = None) -> np.ndarray:
        """See :func:`preprocess`."""
        return preprocess(crops, self.card, size)

    def predict_proba(self, crops: Sequence[np.ndarray], tta: str | None = None) -> np.ndarray:
        """Probabilities (N, len(labels)) in the card's label order, calibrated for the call's TTA mode when the
        card has a calibration (and ``calibrated``); an empty input gives an empty array.
        ``tta``: this call's test-time augmentation (default: the runtime's)."""
        tta = check_tta(tta or self.tta)
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = crops[start:start + self.batch_size]
            views = tta_views(batch, self.card, tta)
            probs = sum(softmax(self.session.run(None, {self.input_name: np.ascontiguousarray(v)})[0])
                        for v in views) / len(views)
            out.append(apply_calibration(probs, self.calibration, tta, self.labels))
        return np.concatenate(out).astype(np.float32)

    def predict(self, crops: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """One dict label -> probability per crop (labels by name, summing to 1)."""
        return [dict(zip(self.labels, map(float, row))) for row in self.predict_proba(crops)]
