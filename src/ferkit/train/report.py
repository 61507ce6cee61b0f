"""What a run folder shows besides its checkpoints: learning curves, and once training ends, the best weights'
confusion matrices on the validation (and test) data and a model card with the recipe, the time and the scores.

The card's scores here come from the torch model in the recipe's precision; ``ferkit export`` measures the exported
ONNX graph again, so a package's card never relies on these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ferkit.io import atomic_write, atomic_write_csv
from ferkit.packages import write_card
from ferkit.train.card import run_card
from ferkit.train.run import RunPaths, load_split, load_weights, predict_logits

METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1", "seconds",
                 "phase"]


def write_metrics(path: Path, history: list[dict]) -> None:
    """``metrics.csv``: one row per epoch (METRIC_FIELDS), rewritten atomically after every epoch."""
    atomic_write_csv(path, METRIC_FIELDS, [{k: r[k] for k in METRIC_FIELDS if k in r} for r in history])


def write_steps(path: Path, history: list[dict]) -> None:
    """``steps.csv``: epoch, step (1-based within the epoch) and loss of every step, rewritten after every epoch
    (the loss curve to compare runs on different worker counts; empty loss: a step left out, see
    :meth:`ferkit.train.distributed.Workers.skips`)."""
    rows = [{"epoch": r["epoch"], "step": i + 1, "loss": "" if loss != loss else loss}
            for r in history for i, loss in enumerate(r.get("step_losses", []))]
    atomic_write_csv(path, ["epoch", "step", "loss"], rows)


def save_curves(history: list[dict], path: Path) -> Path:
    """Loss and accuracy per epoch, train vs validation, with phase boundaries marked (PNG, written atomically).
    Drawn on a bare ``Figure``, not pyplot, so the process's matplotlib backend is left alone."""
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 3.8), dpi=110)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], label="train (augmented)")
        ax.plot(epochs, [r[f"val_{key}"] for r in history], label="validation")
        for prev, row in zip(history, history[1:]):
            if row.get("phase") != prev.get("phase"):
                ax.axvline(prev["epoch"] + 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


def finish_run(run: Path, model: torch.nn.Module, cfg, val, device: str, command: str = "") -> dict:
    """Score the run's best weights on its validation and test data, write their confusion matrices
    (``<split>/confusion*.png``) and the run's ``card.json``; returns the card's metrics by split."""
    from ferkit.evaluate import metrics_report, save_confusion_plots

    load_weights(model, RunPaths(run).best_weights)
    splits = {"validation": val}
    if cfg.data.test:
        splits["test"] = load_split(cfg, "test")
    metrics = {}
    for split, data in splits.items():
        if len(data) == 0:
            continue
        probs = torch.softmax(predict_logits(model, data.images, cfg.eval_batch_size, cfg.precision, device), 1)
        truths = [data.labels[i] for i in data.targets.tolist()]
        report = metrics_report(truths, np.asarray(probs), list(data.labels))
        save_confusion_plots(report, run / split, title=f"{cfg.name} {split}")
        metrics[split] = {k: round(float(report[k]), 4) for k in ("accuracy", "macro_f1", "top2_accuracy")}
        metrics[split]["n"] = report["n"]
    card = run_card(run, model, cfg, "best", cfg.name, command=command)
    card.metrics = {**metrics, "measured_with": f"torch, {cfg.precision}, best weights (ferkit export re-measures ONNX)"}
    write_card(run, card)
    return metrics
