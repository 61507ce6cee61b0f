"""Checkpoints of a run: the last (and best) weights plus the training state, written so a resume can trust them.

Why a shared token: the weights (``last.safetensors``) and the state (``train_state.pt``: optimiser, scheduler,
counters, history) are two files, each written atomically, but a kill between the two writes leaves weights of
epoch k+1 beside the state of epoch k. Each save stamps both with the same token (the epoch and a random id:
in the weights' safetensors metadata and in the state), written weights first and state last; a resume compares
them and refuses a torn pair instead of silently mixing two epochs.
"""

from __future__ import annotations

import math
import pickle
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ferkit.io import atomic_write
from ferkit.train.run import RunError, RunPaths, read_weights


@dataclass
class Progress:
    """Where a run stands: epochs done over all phases, the phase and epochs done in it, best scores, history.

    Scores are signed so that larger is better (a monitored loss is negated).
    """

    epoch: int = 0
    best: float = -math.inf
    since_best: int = 0
    history: list[dict] = field(default_factory=list)
    phase: int = 0
    phase_epoch: int = 0
    phase_best: float = -math.inf
    phase_done: bool = False


def save_checkpoint(paths: RunPaths, model: torch.nn.Module, progress: Progress, improved: bool,
                    optimizer: dict, scheduler: dict, about: dict[str, Any] | None = None) -> None:
    """Write last (and, when ``improved``, best) weights, then the state, all stamped with one new token.

    ``model`` is the unwrapped model (never a DDP wrapper), so the weights load anywhere; ``about`` adds facts
    about how the epoch was trained to the state (the worker count and the global batch)."""
    token = f"{progress.epoch}-{uuid.uuid4().hex}"
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"epoch": str(progress.epoch), "checkpoint": token}
    atomic_write(paths.last_weights, lambda p: save_file(weights, str(p), metadata=meta))
    if improved:
        atomic_write(paths.best_weights, lambda p: save_file(weights, str(p), metadata=meta))
    state = {**asdict(progress), **(about or {}), "optimizer": optimizer, "scheduler": scheduler,
             "checkpoint": token}
    atomic_write(paths.state, lambda p: torch.save(state, p))


def load_checkpoint(paths: RunPaths) -> tuple[Progress, dict[str, Any], dict[str, torch.Tensor]]:
    """(progress, the whole state dict, last weights) of a run, after checking the weights belong to the state.

    Raises RunError (one line saying what to do) for an unreadable state or a torn checkpoint.
    """
    try:
        state = torch.load(paths.state, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise RunError(f"{paths.state}: unreadable training state ({str(exc).splitlines()[0]}); this run cannot "
                       f"resume: start it again without --resume in a new --out") from None
    meta = _weights_metadata(paths)
    stamp, stored = meta.get("checkpoint"), state.get("checkpoint")
    torn = meta.get("epoch") != str(state["epoch"]) or (stamp is not None and stored is not None and stamp != stored) \
        or (stamp is None) != (stored is None)
    if torn:
        raise RunError(f"{paths.root}: torn checkpoint: {paths.last_weights.name} is from epoch {meta.get('epoch', '?')} "
                       f"but {paths.state.name} from epoch {state['epoch']} (the run was stopped while saving), so "
                       f"it cannot resume exactly; start it again without --resume in a new --out")
    # Checkpoints from before phases existed hold one phase that has run ``epoch`` epochs.
    progress = Progress(epoch=state["epoch"], best=state["best"], since_best=state["since_best"],
                        history=state["history"], phase=state.get("phase", 0),
                        phase_epoch=state.get("phase_epoch", state["epoch"]),
                        phase_best=state.get("phase_best", state["best"]), phase_done=state.get("phase_done", False))
    return progress, state, read_weights(paths.last_weights)


def _weights_metadata(paths: RunPaths) -> dict[str, str]:
    try:
        with safe_open(str(paths.last_weights), "pt") as f:
            return f.metadata() or {}
    except FileNotFoundError:
        raise RunError(f"{paths.root}: {paths.state.name} has no {paths.last_weights.name} beside it; this run "
                       f"cannot resume: start it again without --resume in a new --out") from None
    except (SafetensorError, OSError) as exc:
        raise RunError(f"{paths.last_weights}: unreadable weights, truncated or corrupt ({exc}); this run cannot "
                       f"resume: start it again without --resume in a new --out") from None
