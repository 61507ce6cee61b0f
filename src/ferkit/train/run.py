"""A run folder and the model in it: where each file lives, building the recipe's model, reading its weights.

Everything else in ``ferkit.train`` (the loop, checkpoints, reports, export) builds on this module and it imports
none of them, so imports flow one way: run <- checkpoint, targets, card <- report <- loop; card <- export_run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ferkit.errors import FerkitError, UserInputError
from ferkit.labels import space
from ferkit.models import build_model
from ferkit.train.config import ConfigError, TrainConfig, load_config
from ferkit.train.tensors import TensorSet, load_tensors

NORM_MEAN = 0.5
NORM_STD = 0.5
"""Inputs in [0, 1] are normalised to [-1, 1]; export writes these into the model card."""


class RunError(UserInputError):
    """A run folder that cannot be resumed, loaded or exported (missing, torn or corrupt files), with what to do."""


class RunExistsError(FerkitError, FileExistsError):
    """``--out`` already holds a run and ``--resume`` was not given."""


@dataclass
class RunPaths:
    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def last_weights(self) -> Path:
        return self.root / "last.safetensors"

    @property
    def best_weights(self) -> Path:
        return self.root / "best.safetensors"

    @property
    def state(self) -> Path:
        return self.root / "train_state.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def steps(self) -> Path:
        """The training loss of every optimiser step (of the global batch, whatever the worker count)."""
        return self.root / "steps.csv"

    @property
    def hardware(self) -> Path:
        """Where the run trained: one record per start or resume (:func:`ferkit.train.card.record_hardware`)."""
        return self.root / "hardware.json"


def normalise(x_uint8: torch.Tensor) -> torch.Tensor:
    return (x_uint8.float() / 255.0 - NORM_MEAN) / NORM_STD


def autocast(precision: str, device: str):
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    if precision == "fp32":
        return torch.autocast(device_type=device, enabled=False)
    raise ValueError(f"precision must be bf16 or fp32, not {precision!r}")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 512, precision: str = "bf16",
                   device: str = "cpu") -> torch.Tensor:
    """Logits (fp32) for uint8 images (N, C, H, W), in eval mode."""
    model.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        with autocast(precision, device):
            out.append(model(normalise(images[i:i + batch_size]).to(device)).float().cpu())
    return torch.cat(out)


def build_from_config(cfg: TrainConfig) -> torch.nn.Module:
    """The recipe's architecture, untrained; an argument value the architecture rejects is a ConfigError line."""
    labels = space(cfg.data.labels)
    try:
        return build_model(cfg.model.arch, num_classes=len(labels), in_chans=cfg.data.channels,
                           input_size=cfg.data.size, **cfg.model.args)
    except FerkitError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model: {cfg.model.arch} with args {cfg.model.args} cannot be built: {exc}") from None


def load_split(cfg: TrainConfig, which: str) -> TensorSet:
    sources = [(s.path, s.split) for s in getattr(cfg.data, which)]
    limit = cfg.data.limit if which == "train" else cfg.data.val_limit
    return load_tensors(sources, space(cfg.data.labels), cfg.data.size, cfg.data.channels, cfg.data.ferplus_mode,
                        clahe=cfg.data.clahe, limit=limit, seed=cfg.seed)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors state_dict; RunError (one line) for a missing, truncated or corrupt file."""
    try:
        return load_file(path)
    except FileNotFoundError:
        raise RunError(f"{path}: no such weights file (was the run killed before its first epoch ended?)") from None
    except (SafetensorError, OSError) as exc:
        raise RunError(f"{path}: unreadable weights, truncated or corrupt ({exc}); rerun the training, or export "
                       f"the other checkpoint (--which best|last)") from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load ``path`` into ``model``; weights of another architecture or label count are a RunError line."""
    try:
        model.load_state_dict(read_weights(path))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0].rstrip(":. ")
        raise RunError(f"{path}: these weights do not fit the recipe's model ({first})") from None


def load_run_model(run_dir: str | Path, which: str = "best") -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild a run's model from its recipe and load its best (or last) weights."""
    paths = RunPaths(Path(run_dir))
    if not paths.recipe.is_file():
        raise RunError(f"{paths.root}: not a training run (no recipe.yaml)")
    cfg = load_config(paths.recipe)
    # The run's own weights replace everything a pretrained backbone file would give, and that file may be gone.
    args = {k: v for k, v in cfg.model.args.items() if k != "pretrained_path"}
    model = build_from_config(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, args=args)))
    load_weights(model, paths.best_weights if which == "best" else paths.last_weights)
    model.eval()
    return model, cfg
