"""Turn a training run into a model package: ONNX graph + card with provenance and measured test metrics.

The card's metrics are measured here on the exported ONNX graph (not the torch model), through the same
:func:`ferkit.evaluate.evaluate_dataset` that `ferkit evaluate` runs, so the card and a fresh evaluation agree.
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path
from typing import Any

from ferkit import __version__
from ferkit.labels import space
from ferkit.models.package import ModelCard, write_card
from ferkit.train.loop import NORM_MEAN, NORM_STD, RunPaths, load_run_model


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _training_summary(run: Path) -> dict[str, Any]:
    paths = RunPaths(run)
    with open(paths.metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    return {
        "epochs": len(rows),
        "cpu_seconds_wall": round(sum(float(r["seconds"]) for r in rows)),
        "best_epoch": int(best["epoch"]),
        "best_val_accuracy": round(float(best["val_accuracy"]), 4),
    }


def export_run(run: str | Path, out: str | Path, which: str = "best", name: str | None = None,
               crop_policy: str = "margin", crop_margin: float = 0.2, evaluate: bool = True,
               command: str = "") -> ModelCard:
    """Export ``run``'s best (or last) weights to a package at ``out``; evaluate on the recipe's test data."""
    from ferkit.models.export import check_parity, export_onnx

    run, out = Path(run), Path(out)
    model, cfg = load_run_model(run, which)
    labels = list(space(cfg.data.labels))
    card = ModelCard(
        name=name or out.name,
        labels=labels,
        input_size=cfg.data.size,
        channels=cfg.data.channels,
        mean=NORM_MEAN,
        std=NORM_STD,
        crop_policy=crop_policy,
        crop_margin=crop_margin,
        clahe=cfg.data.clahe,
        architecture=f"{cfg.model.arch} {cfg.model.args}" if cfg.model.args else cfg.model.arch,
        parameters=sum(p.numel() for p in model.parameters()),
        training={
            "recipe": cfg.to_dict(),
            "weights": which,
            "data": {k: [vars(s) for s in getattr(cfg.data, k)] for k in ("train", "val", "test")},
            "command": command,
            "commit": _git_commit(),
            "hardware": "2-core x86_64 CPU (avx512_bf16), bf16 autocast",
            **_training_summary(run),
        },
        ferkit_version=__version__,
    )
    graph = export_onnx(model, card, out)
    card.training["onnx_parity_max_abs_diff"] = float(check_parity(model, graph))
    if evaluate and cfg.data.test:
        card.metrics = evaluate_card_metrics(out, cfg.data.test[0].path, cfg.data.test[0].split)
    write_card(out, card)
    return card


def evaluate_card_metrics(package: Path, data: str, split: str | None) -> dict[str, Any]:
    """Headline metrics (single crop and flip TTA) with the command that reproduces each."""
    from ferkit.evaluate import evaluate_dataset

    metrics: dict[str, Any] = {"data": data, "split": split}
    for tta in ("none", "flip"):
        report = evaluate_dataset(data, package, split, tta=tta)
        key = "" if tta == "none" else "flip_tta_"
        metrics[f"{key}accuracy"] = round(report["accuracy"], 4)
        metrics[f"{key}macro_f1"] = round(report["macro_f1"], 4)
        metrics[f"{key}top2_accuracy"] = round(report["top2_accuracy"], 4)
        metrics[f"{key}n"] = report["n"]
        metrics[f"{key}command"] = (f"ferkit evaluate {data} --split {split} --model {package.name}"
                                    + (" --tta flip" if tta == "flip" else ""))
    return metrics
