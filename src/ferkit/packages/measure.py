"""The headline numbers a model card keeps (``card.metrics``), each with the `ferkit evaluate` command that
reproduces it.

Why a module of its own: `ferkit export` (training side) and `ferkit calibrate` (run-time side, no torch) both
(re)measure a card, and both must write the numbers a user's own `ferkit evaluate` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferkit.packages.package import WEIGHTS_DIR

HEADLINE = ("accuracy", "macro_f1", "top2_accuracy", "ece", "nll", "brier")


def model_reference(folder: str | Path) -> str:
    """How a command names this package: its shipped name ('default') or the folder as given."""
    folder = Path(folder)
    return folder.name if folder.resolve().parent == WEIGHTS_DIR else str(folder)


def evaluate_card_metrics(package: str | Path, data: str, split: str | None, name: str | None = None) -> dict[str, Any]:
    """Headline metrics of a model or ensemble package (single crop and flip TTA, calibrated as the package says)
    with the command that reproduces each; ``name`` is how that command names the package (default: :func:`model_reference`)."""
    from ferkit.evaluate import evaluate_dataset

    split = split or "all"  # a test source without a split is scored whole (evaluate's default is the test split)
    name = name or model_reference(package)
    metrics: dict[str, Any] = {"data": data, "split": split}
    for tta in ("none", "flip"):
        report = evaluate_dataset(data, package, split, tta=tta)
        key = "" if tta == "none" else "flip_tta_"
        metrics.update({f"{key}{k}": round(report[k], 4) for k in HEADLINE})
        metrics[f"{key}n"] = report["n"]
        metrics[f"{key}command"] = f"ferkit evaluate {data} --split {split} --model {name} --tta {tta}"
    return metrics
