"""`ferkit calibrate`: fit a package's calibration on a validation split and store it in its card.

Any package `--model` accepts: a model (applied by its runtime) or an ensemble (applied to the combined output).

One fit per TTA mode (:data:`ferkit.runtime.TTA_MODES`), because averaging a crop with its mirror already softens
the probabilities: flip TTA needs a different temperature than one crop. Fitting uses the package's *raw*
probabilities (a calibration is never fitted on top of an older one) and only validation data: a test split is
refused, so the test scores in the card stay honest, and so is Training, where a model is over-confident.
After fitting, the card's ``metrics`` (measured on its test split) are measured again through the same
`ferkit evaluate` code, so the ECE that `ferkit models` shows is the one a user's `ferkit evaluate` prints.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import json

import numpy as np

from ferkit import __version__
from ferkit.calibration import METHODS, CalibrationError, fit_modes, validate
from ferkit.errors import UserInputError
from ferkit.io import atomic_write
from ferkit.packages.measure import evaluate_card_metrics, model_reference
from ferkit.packages.package import CARD_NAME, read_raw_card, resolve_folder

log = logging.getLogger(__name__)

DEFAULT_SPLIT = "PublicTest"


def fitting_split(dataset, split: str | None) -> str:
    """The split to fit on ('all' = every entry), or CalibrationError (one line) for a test or training split."""
    from ferkit.data import canonical_split

    if split is None:
        split = DEFAULT_SPLIT if DEFAULT_SPLIT in dataset.splits or not dataset.splits else "all"
    if split != "all":
        try:
            split = canonical_split(split)
        except ValueError as exc:
            raise UserInputError(str(exc)) from None
    if split == "PrivateTest":
        raise CalibrationError("PrivateTest is the test split: fit a calibration on validation data only "
                               "(--split PublicTest), so that test scores stay honest")
    if split == "Training":
        raise CalibrationError("Training is what the model learnt from (it is over-confident there): fit a "
                               "calibration on validation data only (--split PublicTest)")
    named = [s for s in dataset.splits if s in ("Training", "PrivateTest")]
    if split == "all" and named:
        raise CalibrationError(f"--split all would fit on {' and '.join(named)} rows too: fit on validation data "
                               f"only (--split PublicTest)")
    return split


def probabilities(package: str | os.PathLike, data: str | os.PathLike, split: str | None,
                  modes: Sequence[str] | None = None, ferplus_mode: str = "majority", calibrated: bool = False,
                  for_fitting: bool = False, progress: bool = False
                  ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Class indices and probabilities per TTA mode (default: all) of a package (model or ensemble) on a split
    ('all': every entry) of a dataset of face crops; without the package's own calibration unless ``calibrated``.
    ``for_fitting`` refuses test and training splits (:func:`fitting_split`).

    Decodes the split once, in batches (memory holds the probabilities, not the images); rows whose label the model
    cannot output, and unreadable files, are left out and counted in the returned ``info``.
    """
    from tqdm import tqdm

    from ferkit.classify import load_classifier
    from ferkit.data import decode, open_dataset
    from ferkit.runtime import TTA_MODES

    modes = list(modes or TTA_MODES)
    classifier = load_classifier(package, calibrated=calibrated)
    dataset = open_dataset(data, ferplus_mode)
    if for_fitting:
        split = fitting_split(dataset, split)
    elif split is None:
        raise ValueError("name the split to read, or 'all'")
    entries = dataset.split(None if split == "all" else split)
    if not entries:
        present = ", ".join(s or "no split" for s in dataset.splits) or "none: no labelled images"
        raise UserInputError(f"{data}: no entries in split {split!r} (splits present: {present})")
    specs = classifier.crop_specs
    mode = specs[0].channels if all(s.channels == specs[0].channels for s in specs) else "rgb"
    index = {lab: i for i, lab in enumerate(classifier.labels)}
    problems: list = []
    y: list[int] = []
    probs: dict[str, list[np.ndarray]] = {m: [] for m in modes}
    batch: list[np.ndarray] = []
    not_in_model: dict[str, int] = {}

    def flush() -> None:
        for m in modes:
            probs[m].append(classifier.predict_proba(batch, m))
        batch.clear()

    for sample in tqdm(decode(entries, mode, problems), total=len(entries), disable=not progress, desc="calibrate"):
        if sample.label not in index:
            not_in_model[sample.label] = not_in_model.get(sample.label, 0) + 1
            continue
        y.append(index[sample.label])
        batch.append(sample.image)
        if len(batch) >= classifier.batch_size:
            flush()
    if batch:
        flush()
    info = {"split": split, "labels": list(classifier.labels), "unreadable": len(problems),
            "label_not_in_model": not_in_model}
    k = len(classifier.labels)
    return (np.array(y, dtype=np.int64),
            {m: np.concatenate(p) if p else np.zeros((0, k), np.float32) for m, p in probs.items()}, info)


def calibrate_package(package: str | os.PathLike, data: str | os.PathLike, split: str | None = DEFAULT_SPLIT,
                      method: str = "temperature", out: str | os.PathLike | None = None, command: str = "",
                      ferplus_mode: str = "majority", remeasure: bool = True, progress: bool = False
                      ) -> dict[str, Any]:
    """Fit ``package``'s calibration on ``data``'s validation ``split``, store it in the card; return the card.

    ``package`` is a model or an ensemble package. With ``out`` a calibrated copy is written there and ``package``
    is left untouched; otherwise only its ``card.json`` is replaced (atomically). With ``remeasure`` the card's test
    ``metrics`` are measured again with the calibration applied (when their data can be found), so they include its
    ECE, NLL and Brier score.
    """
    if method not in METHODS:
        raise CalibrationError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    folder = resolve_folder(package)
    target = Path(out) if out is not None else folder
    if out is not None and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserInputError(f"--out {out}: already exists and is not empty; give a new folder (the calibrated copy "
                             f"is written there)")
    card = read_raw_card(folder)
    y, probs, info = probabilities(folder, data, split, ferplus_mode=ferplus_mode, for_fitting=True, progress=progress)
    card["calibration"] = {**fit_modes(probs, y, info["labels"], method), "fitted_on": f"{data} {info['split']}",
                           "command": command, "ferkit_version": __version__}
    validate(card["calibration"], info["labels"])
    skipped = {k: v for k, v in info.items() if k not in ("split", "labels") and v}
    if skipped:
        card["calibration"]["skipped"] = skipped
    if out is not None:
        card["name"] = target.name
        target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".calibrate-", dir=target.parent if out is not None else None))
    try:
        staged = work / target.name
        shutil.copytree(folder, staged)
        _write(staged, card)
        metrics = card.get("metrics") or {}
        card["metrics"] = _remeasured(staged, metrics, model_reference(target)) if remeasure else _unmeasured(metrics)
        _write(staged, card)
        if out is None:
            _write(folder, card)  # atomic: the graphs are unchanged, the card is replaced whole
        else:
            if target.exists():
                target.rmdir()
            os.replace(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return card


def _write(folder: Path, card: dict[str, Any]) -> None:
    atomic_write(folder / CARD_NAME, lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"))


def _remeasured(staged: Path, metrics: dict[str, Any], name: str) -> dict[str, Any]:
    """The card's test metrics measured again with the calibration applied (when their data is here)."""
    data = metrics.get("data")
    if data and Path(data).exists():
        return evaluate_card_metrics(staged, data, metrics.get("split"), name=name)
    if data:
        log.warning("%s: the card's test data %s is not here, so its metrics were not measured again; rerun `ferkit "
                    "calibrate` where it is to record the calibrated ECE", name, data)
    return _unmeasured(metrics)


def _unmeasured(metrics: dict[str, Any]) -> dict[str, Any]:
    """Test metrics not measured again after calibrating: without the calibration numbers they no longer describe,
    and marked as measured before it (vector scaling can also move a few predictions)."""
    if not metrics.get("data"):
        return metrics
    stale = {f"{p}{k}" for p in ("", "flip_tta_") for k in ("ece", "nll", "brier")}
    return {**{k: v for k, v in metrics.items() if k not in stale}, "measured_before_calibration": True}
