"""Honest evaluation: metrics by label name, cross-dataset skipping, groupings, confusion matrices.

All metric arithmetic is scikit-learn's; this module only decides *which* samples and labels are compared, and that
decision is reported in ``skipped`` so a number never hides what it left out.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from ferkit.calibration import calibration_metrics, describe
from ferkit.errors import UserInputError
from ferkit.io import atomic_write
from ferkit.labels import grouping as get_grouping, map_probs
from ferkit.runtime import DEFAULT_TTA


def metrics_report(true_labels: Sequence[str], probs: np.ndarray, model_labels: Sequence[str],
                   grouping: str | None = None, skipped: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics for predictions ``probs`` (N, len(model_labels)) against true label names.

    Samples whose true label the model cannot output (e.g. contempt for a 7-class model) are skipped and counted.
    With ``grouping`` ('6', '3', ...) both truths and predictions are first mapped into that space.
    """
    skipped = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (skipped or {}).items()}
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(model_labels)
    truths = list(true_labels)
    if grouping is not None:
        g = get_grouping(grouping)
        probs = map_probs(probs, labels, g)
        mapped = [g.target_of(t) for t in truths]
        dropped = Counter(t for t, m in zip(truths, mapped) if m is None)
        keep = [m is not None for m in mapped]
        truths = [m for m in mapped if m is not None]
        probs = probs[keep]
        labels = [lab for lab in g.labels if any(g.target_of(m) == lab for m in model_labels)]
        probs = probs[:, [g.labels.index(lab) for lab in labels]]
        if dropped:
            skipped["not_in_grouping"] = dict(dropped)
    known = set(labels)
    missing = Counter(t for t in truths if t not in known)
    if missing:
        skipped["label_not_in_model"] = dict(missing)
    keep = np.array([t in known for t in truths], dtype=bool)
    probs = probs[keep] if len(truths) else probs
    truths = [t for t in truths if t in known]
    if not truths:
        raise UserInputError("no samples left to evaluate (none of the data's labels is one the model outputs)")
    index = {lab: i for i, lab in enumerate(labels)}
    y_true = np.array([index[t] for t in truths])
    y_pred = probs.argmax(axis=1)
    top2 = np.argsort(-probs, axis=1)[:, :2]
    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=ids)
    with np.errstate(invalid="ignore", divide="ignore"):
        cm_norm = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    present = [i for i in ids if s[i] > 0]
    return {
        "n": len(truths),
        **calibration_metrics(probs, y_true),  # ece, nll, brier, mean_confidence, reliability (15 bins)
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "top2_accuracy": float(np.mean([t in row for t, row in zip(y_true, top2)])),
        "per_class": {
            lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)
        },
        "confusion": {"labels": labels, "matrix": cm.tolist()},
        "confusion_normalized": {"labels": labels, "matrix": np.round(cm_norm, 4).tolist()},
        "skipped": skipped,
    }


def format_report(report: dict[str, Any]) -> str:
    """A plain-text summary: headline metrics, per-class table, what was skipped."""
    split = report.get("split")
    lines = [f"scored: {'all entries' if split in (None, 'all') else 'split ' + split} of {report.get('data', '?')}"
             f" (n={report['n']:,})"] if "split" in report else []
    lines += [
        f"n={report['n']}  accuracy={report['accuracy']:.4f}  macro_f1={report['macro_f1']:.4f}  "
        f"top2_accuracy={report['top2_accuracy']:.4f}",
        f"{'class':<10} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}",
    ]
    calibrated = report.get("calibrated")
    lines.insert(-1, f"ece={report['ece']:.4f}  nll={report['nll']:.4f}  brier={report['brier']:.4f}  "
                     f"mean_confidence={report['mean_confidence']:.4f}  "
                     + (f"(calibrated: {calibrated})" if calibrated else "(uncalibrated: see `ferkit calibrate`)"))
    for lab, m in report["per_class"].items():
        lines.append(f"{lab:<10} {m['precision']:>9.4f} {m['recall']:>7.4f} {m['f1']:>7.4f} {m['support']:>8d}")
    if report.get("skipped"):
        lines.append("skipped: " + json.dumps(report["skipped"], sort_keys=True))
    return "\n".join(lines)


def save_confusion_plots(report: dict[str, Any], out_dir: str | os.PathLike, title: str = "") -> list[Path]:
    """Raw and row-normalised confusion matrices as PNG (seed 003 shows the normalised one).

    Drawn on a bare ``Figure`` (matplotlib's object API), not pyplot: no backend is chosen for the process and no
    global figure list keeps the plots alive.
    """
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, fmt, name in (("confusion", "d", "confusion.png"), ("confusion_normalized", ".2f", "confusion_normalized.png")):
        labels = report[key]["labels"]
        m = np.array(report[key]["matrix"])
        fig = Figure(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.7 * len(labels)), dpi=120)
        ax = fig.subplots()
        im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if fmt != "d" else None)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        hi = m.max() if m.size else 0
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if m[i, j] > hi / 2 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title((title + " " if title else "") + ("(row-normalised)" if fmt != "d" else "(counts)"))
        fig.tight_layout()
        path = out / name
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
        written.append(path)
    return written


FACES_MODES = ("none", "detect", "auto")


def _face_crops_or_none(recognizer, image: np.ndarray):
    """The largest detected face cropped as the classifier needs (once per crop spec), or None when no face is
    found."""
    detections = recognizer.detector.detect(image)
    return recognizer.classifier.crop(image, detections[:1]) if detections else None


def choose_split(dataset, split: str | None) -> str:
    """The split to score: ``split`` itself ('all' = every entry), or for None the test split (PrivateTest) when
    the data has one, else 'all'. Scoring Training data by default would report a model's fit, not its accuracy."""
    from ferkit.data import canonical_split

    if split is None:
        return "PrivateTest" if "PrivateTest" in dataset.splits else "all"
    if split == "all":
        return "all"
    try:
        return canonical_split(split)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None


def evaluate_dataset(data: str | os.PathLike, model: str | os.PathLike = "default", split: str | None = None,
                     grouping: str | None = None, tta: str = DEFAULT_TTA, ferplus_mode: str = "majority",
                     faces: str = "none", detector: str = "auto", progress: bool = False) -> dict[str, Any]:
    """Run a model or ensemble package over a dataset and report metrics (the engine behind `ferkit evaluate`).

    ``faces``: 'none' when the images are face crops already; 'detect' to find the largest face in each (whole
    photos), cropped with the model card's policy; 'auto' detects only in images more than twice the model's input
    size. Images where detection finds no face are counted in ``skipped['no_face']``, never silently dropped.
    ``split``: see :func:`choose_split` (None: the test split where there is one); the report's ``split`` says
    which was scored.
    """
    from tqdm import tqdm

    from ferkit.classify import load_classifier
    from ferkit.data import decode, open_dataset

    if faces not in FACES_MODES:
        raise UserInputError(f"faces must be one of {FACES_MODES}, not {faces!r}")
    recognizer = None
    if faces == "none":
        classifier = load_classifier(model, tta=tta)
    else:
        from ferkit.recognizer import Recognizer

        recognizer = Recognizer(model, detector, tta=tta)
        classifier = recognizer.classifier
    dataset = open_dataset(data, ferplus_mode)
    split = choose_split(dataset, split)
    entries = dataset.split(None if split == "all" else split)
    if not entries:
        present = ", ".join(s or "no split" for s in dataset.splits) or "none: no labelled images"
        raise UserInputError(f"{data}: no entries in split {split!r} (splits present: {present})")
    specs = classifier.crop_specs
    mode = specs[0].channels if recognizer is None and all(s.channels == specs[0].channels for s in specs) else "rgb"
    input_size = max(s.size for s in specs)
    problems: list = dataset.problems(None if split == "all" else split)
    truths: list[str] = []
    probs: list[np.ndarray] = []
    batch: dict = {spec: [] for spec in specs}
    no_face = 0

    def flush() -> None:
        if batch[specs[0]]:
            probs.append(classifier.predict_proba(batch))
            for crops in batch.values():
                crops.clear()

    for sample in tqdm(decode(entries, mode, problems), total=len(entries), disable=not progress, desc="evaluate"):
        image = sample.image
        if recognizer is not None and (faces == "detect" or max(image.shape[:2]) > 2 * input_size):
            crops = _face_crops_or_none(recognizer, image)
            if crops is None:
                no_face += 1
                continue
            for spec in specs:
                batch[spec].extend(crops[spec])
        else:  # a face crop already: every crop spec gets it as it is
            for spec in specs:
                batch[spec].append(image)
        truths.append(sample.label)
        if len(batch[specs[0]]) >= classifier.batch_size:
            flush()
    flush()
    skipped: dict[str, Any] = dict(dataset.ignored)
    if problems:
        skipped["unreadable"] = len(problems)
    if no_face:
        skipped["no_face"] = no_face
    report = metrics_report(truths, np.concatenate(probs) if probs else np.zeros((0, len(classifier.labels))),
                            classifier.labels, grouping, skipped)
    report["problems"] = [f"{p.reason}" for p in problems]
    report.update({"model": str(getattr(classifier, "folder", classifier.name)), "data": str(data), "split": split,
                   "grouping": grouping, "tta": tta, "faces": faces,
                   "calibrated": describe(getattr(classifier, "calibration", None), tta)})
    return report
