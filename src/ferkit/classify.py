"""The Classifier interface: everything that turns face crops into emotion probabilities goes through it.

A classifier says which labels it outputs (by name), which crops it needs (``crop_specs``: policy, margin,
alignment, size, colour), and answers ``predict_proba(crops)`` and ``embed(crops)``. Three implementations:

- :class:`PackageClassifier`: one model package (ONNX Runtime, :class:`ferkit.runtime.ModelRuntime`);
- :class:`EnsembleClassifier`: an ensemble package, its members combined by :mod:`ferkit.combine`;
- :class:`TorchClassifier`: a torch module and a card, for the training side (torch is imported lazily).

``crops`` is either a list of crops (one per face, given to every crop spec: pre-cropped data such as FER2013) or a
:data:`FaceCrops` dict made by :meth:`Classifier.crop`, which crops each face once per distinct crop spec, however
many members share it. Recognizer, analyze, evaluate, bench, rank, journal, video, serve and distillation use only
this interface; :func:`load_classifier` resolves ``--model``.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from ferkit.calibration import apply as apply_calibration
from ferkit.combine import combine
from ferkit.faces.crop import crop_face
from ferkit.faces.detection import Detection
from ferkit.io import colour_mode
from ferkit.packages import CARD_NAME, GRAPH_NAME, ModelCard, PackageError, card_kind, resolve_folder
from ferkit.packages.ensemble import member_folder, read_ensemble_card
from ferkit.runtime import DEFAULT_TTA, ModelRuntime, check_tta, softmax, tta_views


@dataclass(frozen=True)
class CropSpec:
    """Everything :func:`ferkit.faces.crop_face` needs to cut a face the way a model was trained on."""

    policy: str
    margin: float
    align: bool
    size: int
    channels: str
    """'gray' or 'rgb'."""

    @classmethod
    def of(cls, card: ModelCard) -> CropSpec:
        return cls(card.crop_policy, float(card.crop_margin), card.align, card.input_size, colour_mode(card.channels))

    def crop(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        return crop_face(image, detection, policy=self.policy, size=self.size, channels=self.channels,
                         align=self.align, margin=self.margin)

    def describe(self) -> str:
        margin = f" {self.margin:g}" if self.policy == "margin" else ""
        return f"{self.policy}{margin}{', aligned' if self.align else ''}, {self.size}px {self.channels}"


FaceCrops = dict[CropSpec, list[np.ndarray]]
Crops = Union[Sequence[np.ndarray], Mapping[CropSpec, Sequence[np.ndarray]]]


def crop_faces(specs: Sequence[CropSpec], image: np.ndarray, detections: Sequence[Detection]) -> FaceCrops:
    """Each face cropped once per crop spec (a function of the specs alone, so a process that has no model loaded,
    such as a Ray detection task, crops exactly as the classifier would)."""
    return {spec: [spec.crop(image, d) for d in detections] for spec in specs}


def n_faces(crops: Crops) -> int:
    if isinstance(crops, Mapping):
        return len(next(iter(crops.values()), []))
    return len(crops)


class Classifier(ABC):
    """Face crops -> probabilities over ``labels`` (by name). ``tta`` is the default test-time augmentation."""

    name: str
    labels: list[str]
    crop_specs: tuple[CropSpec, ...]
    tta: str
    threads: int | None
    batch_size: int = 256

    @abstractmethod
    def predict_proba(self, crops: Crops, tta: str | None = None) -> np.ndarray:
        """(N, len(labels)) probabilities, rows summing to 1."""

    @abstractmethod
    def embed(self, crops: Crops) -> np.ndarray:
        """(N, D) face embeddings (the penultimate layer; an ensemble concatenates its members')."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """What `ferkit models` and GET /v1/models show: kind, labels, architecture, parameters, input, accuracy."""

    @abstractmethod
    def digest(self) -> str:
        """A short hash of everything that shapes the outputs (graphs and cards): a journal's model identity."""

    def crop(self, image: np.ndarray, detections: Sequence[Detection]) -> FaceCrops:
        """Each face cropped once per crop spec (not once per member)."""
        return crop_faces(self.crop_specs, image, detections)

    def predict(self, crops: Crops, tta: str | None = None) -> list[dict[str, float]]:
        """One dict label -> probability per face."""
        return [dict(zip(self.labels, map(float, row))) for row in self.predict_proba(crops, tta)]

    @staticmethod
    def crops_for(crops: Crops, spec: CropSpec) -> Sequence[np.ndarray]:
        return crops[spec] if isinstance(crops, Mapping) else crops


def _digest(folders: Sequence[Path], names: Sequence[str]) -> str:
    h = hashlib.sha256()
    for folder in folders:
        for name in names:
            path = folder / name
            if path.is_file():
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
    return h.hexdigest()[:16]


class PackageClassifier(Classifier):
    """One model package on ONNX Runtime."""

    def __init__(self, model: str | os.PathLike = "default", tta: str = DEFAULT_TTA, threads: int | None = None,
                 batch_size: int = 256, calibrated: bool = True) -> None:
        self.runtime = ModelRuntime(model, threads=threads, tta=tta, batch_size=batch_size, calibrated=calibrated)
        self.folder = self.runtime.folder
        self.card = self.runtime.card
        self.calibration = self.runtime.calibration
        self.name, self.labels, self.tta = self.card.name, list(self.card.labels), tta
        self.threads, self.batch_size = threads, batch_size
        self.crop_specs = (CropSpec.of(self.card),)
        self._embedding = None

    def predict_proba(self, crops: Crops, tta: str | None = None) -> np.ndarray:
        return self.runtime.predict_proba(self.crops_for(crops, self.crop_specs[0]), tta)

    def embed(self, crops: Crops) -> np.ndarray:
        crops = self.crops_for(crops, self.crop_specs[0])
        if len(crops) == 0:
            return np.zeros((0, 0), np.float32)
        if self._embedding is None:
            from ferkit.packages.embedding import embedding_session

            self._embedding = embedding_session(self.folder)
        session, input_name, tensor = self._embedding
        out = session.run([tensor], {input_name: self.runtime.preprocess(crops)})[0]
        return out.reshape(len(crops), -1).astype(np.float32)

    def info(self) -> dict[str, Any]:
        c = self.card
        return {"name": self.name, "kind": "model", "labels": self.labels, "architecture": c.arch,
                "parameters": c.parameters, "input_size": c.input_size, "channels": c.channels,
                "accuracy": c.metrics.get("accuracy"), "crops": [s.describe() for s in self.crop_specs],
                "size_bytes": (self.folder / GRAPH_NAME).stat().st_size}

    def digest(self) -> str:
        return _digest([self.folder], [GRAPH_NAME, CARD_NAME])


class EnsembleClassifier(Classifier):
    """An ensemble package: each member classifies the crops of its own crop spec, :func:`ferkit.combine.combine`
    merges their probabilities (each calibrated as its own card says) by label name with the card's method and
    weights; the ensemble's own calibration (``ferkit calibrate`` on the ensemble) applies to the combined output
    unless ``calibrated=False``."""

    def __init__(self, folder: str | os.PathLike, tta: str = DEFAULT_TTA, threads: int | None = None,
                 batch_size: int = 256, calibrated: bool = True) -> None:
        self.folder = Path(folder)
        self.card = read_ensemble_card(self.folder)
        self.calibration = (self.card.calibration or {}) if calibrated else {}
        self.name, self.labels, self.tta = self.card.name, list(self.card.labels), check_tta(tta)
        self.threads, self.batch_size = threads, batch_size
        self.members = [PackageClassifier(member_folder(self.folder, m), tta, threads, batch_size)
                        for m in self.card.members]
        self.weights = np.array([m.weight for m in self.card.members]) / sum(m.weight for m in self.card.members)
        self.crop_specs = tuple(dict.fromkeys(s for m in self.members for s in m.crop_specs))
        missing = sorted({lab for m in self.members for lab in m.labels} - set(self.labels))
        if missing:
            raise PackageError(f"{self.folder}: members output {', '.join(missing)}, which the ensemble card's "
                                "labels lack; rebuild it with `ferkit ensemble build`")

    def predict_proba(self, crops: Crops, tta: str | None = None) -> np.ndarray:
        tta = check_tta(tta or self.tta)
        probs = [m.predict_proba(crops, tta) for m in self.members]
        out = combine(probs, [m.labels for m in self.members], self.labels, self.card.method, self.weights)
        return apply_calibration(out, self.calibration, tta, self.labels)

    def embed(self, crops: Crops) -> np.ndarray:
        return np.concatenate([m.embed(crops) for m in self.members], axis=1)

    def info(self) -> dict[str, Any]:
        members = [{"name": c.name, "weight": round(float(w), 6), "labels": m.labels}
                   for c, m, w in zip(self.card.members, self.members, self.weights)]
        return {"name": self.name, "kind": "ensemble", "labels": self.labels, "method": self.card.method,
                "members": members,
                "architecture": f"ensemble ({self.card.method}) of " + ", ".join(c.name for c in self.card.members),
                "parameters": sum(m.card.parameters for m in self.members),
                "input_size": self.members[0].card.input_size, "channels": self.members[0].card.channels,
                "accuracy": self.card.metrics.get("accuracy"), "crops": [s.describe() for s in self.crop_specs],
                "size_bytes": sum(m.info()["size_bytes"] for m in self.members)}

    def digest(self) -> str:
        return _digest([self.folder, *(m.folder for m in self.members)], [GRAPH_NAME, CARD_NAME])


class TorchClassifier(Classifier):
    """A torch module fed exactly as its exported package would be (the card's preprocessing and TTA views), for
    evaluation during training and distillation without exporting first. Imports torch only when used."""

    def __init__(self, model, card: ModelCard, tta: str = "none", batch_size: int = 256) -> None:
        self.model, self.card = model, card
        self.name, self.labels, self.tta = card.name, list(card.labels), check_tta(tta)
        self.threads, self.batch_size = None, batch_size
        self.crop_specs = (CropSpec.of(card),)

    def _run(self, x: np.ndarray, embed: bool = False) -> np.ndarray:
        import torch

        device = next(self.model.parameters()).device
        feats: list = []
        handle = None
        if embed:
            last = [m for m in self.model.modules() if isinstance(m, torch.nn.Linear)][-1]
            handle = last.register_forward_hook(lambda mod, inp, out: feats.append(inp[0]))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(device))
        finally:
            self.model.train(was_training)
            if handle is not None:
                handle.remove()
        return (feats[0] if embed else out).float().cpu().numpy()

    def predict_proba(self, crops: Crops, tta: str | None = None) -> np.ndarray:
        tta = check_tta(tta or self.tta)
        crops = self.crops_for(crops, self.crop_specs[0])
        out = [np.zeros((0, len(self.labels)), np.float32)]
        for start in range(0, len(crops), self.batch_size):
            views = tta_views(crops[start:start + self.batch_size], self.card, tta)
            out.append((sum(softmax(self._run(v)) for v in views) / len(views)).astype(np.float32))
        return np.concatenate(out)

    def embed(self, crops: Crops) -> np.ndarray:
        crops = self.crops_for(crops, self.crop_specs[0])
        if len(crops) == 0:
            return np.zeros((0, 0), np.float32)
        return self._run(tta_views(crops, self.card, "none")[0], embed=True).reshape(len(crops), -1)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "torch", "labels": self.labels, "architecture": self.card.arch,
                "parameters": sum(p.numel() for p in self.model.parameters()), "input_size": self.card.input_size,
                "channels": self.card.channels, "accuracy": None, "crops": [s.describe() for s in self.crop_specs]}

    def digest(self) -> str:
        h = hashlib.sha256()
        for t in self.model.state_dict().values():
            h.update(t.detach().cpu().numpy().tobytes())
        h.update(self.card.to_json().encode())
        return h.hexdigest()[:16]


def load_classifier(model: str | os.PathLike | Classifier = "default", tta: str = DEFAULT_TTA,
                    threads: int | None = None, batch_size: int = 256, calibrated: bool = True) -> Classifier:
    """A shipped model name, a model package folder or an ensemble package folder -> its Classifier (a Classifier
    is returned as it is). Each member's graph is checked against its card here, when it loads. ``calibrated=False``
    leaves out the package's own calibration (what fitting one, and distillation, need)."""
    if isinstance(model, Classifier):
        return model
    check_tta(tta)
    folder = resolve_folder(model)
    if (folder / CARD_NAME).is_file() and card_kind(folder) == "ensemble":
        return EnsembleClassifier(folder, tta, threads, batch_size, calibrated)
    return PackageClassifier(folder, tta, threads, batch_size, calibrated)
