"""Whole-clip emotion (seed 004): frame embeddings pooled into a clip descriptor, then LinearSVC or a random forest.

- single (AFEW-style): the largest face of each frame -> its embedding; the clip is the concatenation of their
  mean, std, min and max over frames (4 D), L2-normalised.
- group (VGAF-style): the faces of a frame -> mean and std over faces (2 D); the clip is the mean and std of those
  over frames (4 D), L2-normalised.
Clips in which no face is found have no descriptor: training leaves them out (and says so), prediction says so.

A classifier is saved as ``classifier.joblib`` (scikit-learn's own persistence; load only files you trust, as
with any pickle) beside ``classifier.json`` (labels, descriptor kind, model package, the cross-validated report).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import UserInputError
from ferkit.io import atomic_write
from ferkit.video.source import VideoSource, iter_video_paths

KINDS = ("single", "group")
CLASSIFIERS = ("linear-svc", "random-forest")


@dataclass
class ClipFeatures:
    """Turns clips into descriptors with a Recognizer's detector and crop policy and its model's embedding."""

    recognizer: Any
    kind: str = "single"
    every: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserInputError(f"descriptor kind must be one of {KINDS}, not {self.kind!r}")

    def frame_embeddings(self, path: str | os.PathLike) -> list[np.ndarray]:
        """Per frame with a face: (faces, D) embeddings (only the largest face for ``single``)."""
        r = self.recognizer
        out = []
        with VideoSource(path) as source:
            for frame in source:
                if frame.index % self.every:
                    continue
                dets = [d for d in r.detector.detect(frame.rgb) if min(d.box[2], d.box[3]) >= r.min_face]
                if not dets:
                    continue
                if self.kind == "single":
                    dets = [max(dets, key=lambda d: d.area)]
                out.append(r.embed(frame.rgb, dets))
        return out

    def describe(self, path: str | os.PathLike) -> np.ndarray | None:
        """The clip descriptor (4 D, unit length), or None when no frame has a face."""
        frames = self.frame_embeddings(path)
        if not frames:
            return None
        if self.kind == "single":
            e = np.concatenate(frames)
            parts = [e.mean(0), e.std(0), e.min(0), e.max(0)]
        else:
            per_frame = np.stack([np.concatenate([f.mean(0), f.std(0)]) for f in frames])
            parts = [per_frame.mean(0), per_frame.std(0)]
        d = np.concatenate(parts).astype(np.float64)
        return d / max(np.linalg.norm(d), 1e-12)


def _classifier(name: str, seed: int):
    if name == "linear-svc":
        from sklearn.svm import LinearSVC

        return LinearSVC(C=1.0, max_iter=20000, random_state=seed)
    if name == "random-forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=1000, random_state=seed, n_jobs=-1)
    raise UserInputError(f"--classifier must be one of {CLASSIFIERS}, not {name!r}")


def described(clips: Iterable[Path], features: ClipFeatures,
              on_error: Callable[[str], None] | None = None) -> Iterator[tuple[Path, np.ndarray]]:
    """Each clip that reads and shows a face, with its descriptor; the others are reported (one line each) and left
    out, so one bad clip never stops training or prediction."""
    for clip in clips:
        try:
            d = features.describe(clip)
        except UserInputError as exc:
            if on_error:
                on_error(str(exc))
            continue
        if d is None:
            if on_error:
                on_error(f"{clip}: no face found in any frame; left out")
            continue
        yield clip, d


def collect(folder: str | os.PathLike, features: ClipFeatures,
            on_error: Callable[[str], None] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Descriptors, labels and paths of the clips in a folder per class (the folder name is the label)."""
    root = Path(folder)
    if not root.is_dir():
        raise UserInputError(f"{root}: not a folder (expected one subfolder of clips per class)")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise UserInputError(f"{root}: needs at least two class subfolders of clips, found {len(classes)}")
    X, y, paths = [], [], []
    for class_dir in classes:
        for clip, d in described(iter_video_paths([class_dir]), features, on_error):
            X.append(d)
            y.append(class_dir.name)
            paths.append(str(clip))
    if not X:
        raise UserInputError(f"{root}: no clip with a face in it")
    return np.stack(X), y, paths


def train(folder: str | os.PathLike, out: str | os.PathLike, recognizer, classifier: str = "linear-svc",
          kind: str = "single", folds: int = 5, seed: int = 0, every: int = 1,
          on_error: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fit on every clip, report stratified k-fold cross-validation, save to ``out``; returns the report."""
    import joblib
    from sklearn.metrics import accuracy_score, classification_report
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    features = ClipFeatures(recognizer, kind, every)
    X, y, paths = collect(folder, features, on_error)
    counts = {c: y.count(c) for c in sorted(set(y))}
    if len(counts) < 2:
        raise UserInputError(f"{folder}: clips with faces in only one class ({next(iter(counts))}); need two")
    k = min(folds, min(counts.values()))
    report: dict[str, Any] = {"clips": len(y), "per_class": counts, "classifier": classifier, "kind": kind,
                              "descriptor_dim": int(X.shape[1]), "model": recognizer.model_name}
    if k >= 2:
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        predicted = cross_val_predict(_classifier(classifier, seed), X, y, cv=cv)
        report.update(cv_folds=k, cv_accuracy=round(float(accuracy_score(y, predicted)), 4),
                      cv_report=classification_report(y, predicted, zero_division=0))
    else:
        report.update(cv_folds=0, cv_accuracy=None, cv_report="too few clips per class to cross-validate (need 2)")
    model = _classifier(classifier, seed).fit(X, y)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "classifier.joblib", lambda tmp: joblib.dump(model, tmp))
    card = {k_: v for k_, v in report.items()}
    card["labels"] = sorted(counts)
    atomic_write(out / "classifier.json", lambda tmp: tmp.write_text(json.dumps(card, indent=1) + "\n"))
    return report


def load(classifier_dir: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    import joblib

    d = Path(classifier_dir)
    if not (d / "classifier.joblib").exists() or not (d / "classifier.json").exists():
        raise UserInputError(f"{d}: not a clip classifier folder (classifier.joblib + classifier.json from "
                             "`ferkit clips train`)")
    return joblib.load(d / "classifier.joblib"), json.loads((d / "classifier.json").read_text())


def predict(clips: list[str | os.PathLike], classifier_dir: str | os.PathLike, recognizer,
            on_error: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One dict per clip with a face: ``clip``, ``label`` and, for classifiers that have them, ``scores``."""
    model, card = load(classifier_dir)
    if card["model"] != recognizer.model_name:
        raise UserInputError(f"{classifier_dir} was trained on embeddings of model {card['model']!r}, not "
                             f"{recognizer.model_name!r}: pass --model {card['model']}")
    features = ClipFeatures(recognizer, card["kind"], 1)
    out = []
    for clip, d in described(iter_video_paths(clips), features, on_error):
        row: dict[str, Any] = {"clip": str(clip), "label": str(model.predict(d[None])[0])}
        if hasattr(model, "predict_proba"):
            row["scores"] = {str(c): round(float(p), 4) for c, p in zip(model.classes_, model.predict_proba(d[None])[0])}
        out.append(row)
    return out
