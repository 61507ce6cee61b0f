"""The model card of a training run: what a package needs to run the model and how the model was trained.

Shared by :func:`ferkit.train.report.finish_run` (the run folder's ``card.json``) and
:func:`ferkit.train.export_run.export_run` (the package's card, with metrics measured on the ONNX graph).
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path
from typing import Any

from ferkit import __version__
from ferkit.labels import space
from ferkit.packages import ModelCard
from ferkit.train.run import NORM_MEAN, NORM_STD, RunError, RunPaths


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _training_summary(run: Path) -> dict[str, Any]:
    paths = RunPaths(run)
    try:
        with open(paths.metrics, newline="") as f:
            rows = list(csv.DictReader(f))
        best = max(rows, key=lambda r: float(r["val_accuracy"]))
        return {
            "epochs": len(rows),
            "cpu_seconds_wall": round(sum(float(r["seconds"]) for r in rows)),
            "best_epoch": int(best["epoch"]),
            "best_val_accuracy": round(float(best["val_accuracy"]), 4),
        }
    except FileNotFoundError:
        raise RunError(f"{paths.metrics}: missing; the run has not finished an epoch") from None
    except (KeyError, TypeError, ValueError) as exc:  # max() of no rows, a cut or edited row
        raise RunError(f"{paths.metrics}: unreadable epoch metrics ({exc or 'no epochs'})") from None


def _chain_summary(cfg) -> dict[str, Any]:
    """For a warm-started run (``init: RUN``): the starting run's own summary (epochs, time, best epoch), so a card
    tells how much training the weights really had. Empty when the run started from scratch."""
    if not cfg.init:
        return {}
    init = Path(cfg.init)
    if not RunPaths(init).metrics.exists():
        return {"init": {"weights": cfg.init}}
    return {"init": {"run": cfg.init, **_training_summary(init)}}


def run_card(run: Path, model, cfg, which: str = "best", name: str | None = None, crop_policy: str = "margin",
             crop_margin: float = 0.2, command: str = "") -> ModelCard:
    """The card of a run's model: what a package needs to run it (labels, input, normalisation, crop) and how it
    was trained (recipe, data, command, commit, time, best epoch, the run it started from); no metrics yet."""
    return ModelCard(
        name=name or Path(run).name,
        labels=list(space(cfg.data.labels)),
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
            "hardware": f"2-core x86_64 CPU (avx512_bf16), {cfg.precision}",
            **_training_summary(Path(run)),
            **_chain_summary(cfg),
        },
        ferkit_version=__version__,
    )
