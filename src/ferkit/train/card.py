"""The model card of a training run: what a package needs to run the model and how the model was trained.

Shared by :func:`ferkit.train.report.finish_run` (the run folder's ``card.json``) and
:func:`ferkit.train.export_run.export_run` (the package's card, with metrics measured on the ONNX graph).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ferkit import __version__
from ferkit.io import atomic_write
from ferkit.labels import space
from ferkit.packages import ModelCard
from ferkit.train.run import NORM_MEAN, NORM_STD, RunError, RunPaths


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else the platform's answer)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware(device: str, precision: str, workers: int = 1) -> dict[str, Any]:
    """Where a model is being trained: the GPU's name for ``cuda``, else the CPU's model and core count, and the
    precision (``bf16`` = bf16 autocast), and the number of data-parallel workers (rank 0's machine is the one
    described). Recorded by the loop when training starts, so a card tells the machine its training time was
    measured on."""
    import torch

    info: dict[str, Any] = {"device": device, "precision": precision, "workers": workers}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    info["cpu"] = _cpu_name()
    info["cpu_cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["torch"] = torch.__version__
    return info


def hardware_text(info: dict[str, Any]) -> str:
    """One line for a hardware record: 'NVIDIA H100 80GB HBM3 (cuda), bf16' or 'Intel Xeon ... (2 cores), fp32'."""
    where = (f"{info['gpu']} ({info['device']})" if info.get("gpu")
             else f"{info.get('cpu', 'unknown CPU')} ({info.get('cpu_cores', '?')} cores)")
    workers = info.get("workers", 1)
    return f"{where}, {info.get('precision', '?')}" + (f", {workers} workers" if workers > 1 else "")


def record_hardware(run: Path, device: str, precision: str, from_epoch: int, workers: int = 1) -> None:
    """Append where training (re)starts to ``run/hardware.json``: a run resumed on another machine or another
    number of workers keeps both (a run starting at epoch 0 starts the list afresh)."""
    path = RunPaths(run).hardware
    try:
        records = json.loads(path.read_text()) if from_epoch else []
    except (OSError, ValueError):
        records = []
    records.append({**hardware(device, precision, workers), "from_epoch": from_epoch})
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(records, indent=2) + "\n"))


def _run_hardware(run: Path, precision: str) -> dict[str, Any] | str:
    """The card's ``hardware``: where the run trained (the first record, with ``summary``), and ``also`` for the
    other machines it was resumed on; a run from before hardware was recorded says so."""
    try:
        records = json.loads(RunPaths(run).hardware.read_text())
    except (OSError, ValueError):
        return f"not recorded (run predates hardware.json), {precision}"
    key = lambda r: {k: v for k, v in r.items() if k != "from_epoch"}  # noqa: E731
    first = {**key(records[0]), "summary": hardware_text(records[0])}
    others = [r for r in records[1:] if key(r) != key(records[0])]
    if others:
        first["also"] = [{**r, "summary": hardware_text(r)} for r in others]
    return first


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
        # the run's own weights replace a pretrained backbone file, so building the package's model never needs it
        architecture={"arch": cfg.model.arch,
                      "args": {k: v for k, v in cfg.model.args.items() if k != "pretrained_path"}},
        parameters=sum(p.numel() for p in model.parameters()),
        training={
            "recipe": cfg.to_dict(),
            "weights": which,
            "data": {k: [vars(s) for s in getattr(cfg.data, k)] for k in ("train", "val", "test")},
            "command": command,
            "commit": _git_commit(),
            "hardware": _run_hardware(Path(run), cfg.precision),
            **_training_summary(Path(run)),
            **_chain_summary(cfg),
        },
        ferkit_version=__version__,
    )
