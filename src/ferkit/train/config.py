"""Training recipes: YAML files parsed into typed dataclasses, with unknown keys rejected.

A typo in a recipe ("lr_shedule") must fail at load, not silently train with a default for hours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ferkit.train.augment import AugmentConfig
from ferkit.errors import UserInputError


class ConfigError(UserInputError):
    """A recipe that cannot be used, with the offending key."""


@dataclass
class DataSource:
    """One dataset path and the split to take from it (None = all of it)."""

    path: str
    split: str | None = None


@dataclass
class DataConfig:
    train: list[DataSource]
    val: list[DataSource]
    test: list[DataSource] = field(default_factory=list)
    labels: str | list[str] = "fer2013"
    size: int = 48
    channels: int = 1
    ferplus_mode: str = "majority"
    soft_labels: bool = False
    clahe: bool = False
    """Apply CLAHE (:func:`ferkit.faces.enhance.apply_clahe`) to every train/val image after resizing to ``size``;
    the exported card then tells the runtime to do the same to every crop (seed 003)."""
    limit: int | None = None
    """Keep only the first N training samples of each train source after a shuffle seeded by ``seed`` (smoke runs,
    learning curves; ``ferkit train --limit N``)."""
    val_limit: int | None = None
    """The same for each validation and test source (``ferkit train --val-limit N``), which score the run."""

    def __post_init__(self) -> None:
        for key in ("limit", "val_limit"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{key} must be a positive number of samples, not {value!r}")


@dataclass
class ModelConfig:
    arch: str = "fervgg"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    sam_rho: float = 0.05


@dataclass
class ScheduleConfig:
    name: str = "onecycle"
    pct_start: float = 0.2
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    min_lr: float = 1e-6


@dataclass
class LossConfig:
    label_smoothing: float = 0.0
    class_weights: str | None = None


PHASE_TRAIN = ("head", "all", "last_n")


@dataclass
class PhaseConfig:
    """One stage of a multi-phase recipe (transfer learning: seeds 000, 003, 004).

    ``train`` says which parameters learn in this phase: ``head`` (the classifier head only; the backbone is frozen,
    its BatchNorm layers keep their running statistics), ``all``, or ``last_n`` (the head plus the last ``last_n``
    blocks of the backbone; see :mod:`ferkit.train.freeze` for what a block is). Each phase builds a fresh
    optimiser (``optim`` with ``lr`` when given) and a fresh schedule (``schedule``, or the named one when
    ``schedule`` is given here) over its own epochs. ``early_stopping_patience`` ends the phase (not the run) after
    that many epochs without a gain in ``monitor`` within the phase; None inherits the recipe's value, 0 turns it
    off for this phase.
    """

    epochs: int
    train: str = "all"
    last_n: int = 0
    lr: float | None = None
    schedule: str | None = None
    early_stopping_patience: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"phase epochs must be a positive integer, not {self.epochs!r}")
        if self.train not in PHASE_TRAIN:
            raise ConfigError(f"phase train must be one of {list(PHASE_TRAIN)}, not {self.train!r}")
        if self.train == "last_n" and (not isinstance(self.last_n, int) or self.last_n < 1):
            raise ConfigError(f"phase train: last_n needs last_n >= 1 (blocks to unfreeze), got {self.last_n!r}")
        if self.train != "last_n" and self.last_n:
            raise ConfigError(f"phase last_n: {self.last_n} only applies with train: last_n (got train: {self.train})")


@dataclass
class DistillConfig:
    """Knowledge distillation (:mod:`ferkit.train.distill`): the training target of each image becomes
    ``weight * teacher + (1 - weight) * label``, where ``teacher`` is a model package's probabilities at
    ``temperature`` (averaged over the image and its mirror with ``flip``)."""

    teacher: str
    weight: float = 0.5
    temperature: float = 2.0
    flip: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"distill weight must be within [0, 1], not {self.weight!r}")
        if self.temperature <= 0:
            raise ConfigError(f"distill temperature must be > 0, not {self.temperature!r}")


MONITORS = ("accuracy", "macro_f1", "loss")


@dataclass
class TrainConfig:
    name: str
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int | None = None
    """Epochs of a single-phase recipe (default 30); leave unset when ``phases`` is given."""
    phases: list[PhaseConfig] = field(default_factory=list)
    batch_size: int = 128
    seed: int = 0
    precision: str = "bf16"
    monitor: str = "accuracy"
    early_stopping_patience: int | None = None
    eval_batch_size: int = 512
    init: str | None = None
    """Start from these weights instead of a random init: a run folder (its best weights) or a .safetensors file
    (warm restarts: a second schedule on a trained model). A resumed run loads its own checkpoint instead."""
    distill: DistillConfig | None = None

    def __post_init__(self) -> None:
        if self.phases and self.epochs is not None:
            raise ConfigError("give epochs per phase, not a top-level epochs, when phases are set")
        if not self.phases and self.epochs is None:
            self.epochs = 30
        if self.monitor not in MONITORS:
            raise ConfigError(f"monitor must be one of {list(MONITORS)}, not {self.monitor!r}")

    def run_phases(self) -> list[PhaseConfig]:
        """The phases this recipe trains: ``phases``, or one phase of ``epochs`` training everything."""
        return list(self.phases) if self.phases else [PhaseConfig(epochs=int(self.epochs or 30))]

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.run_phases())

    def set_epochs(self, epochs: int) -> None:
        """Override the length of the run: every phase gets ``epochs`` (a smoke run is one epoch per phase)."""
        if self.phases:
            for p in self.phases:
                p.epochs = epochs
        else:
            self.epochs = epochs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        sub = _NESTED.get((cls, name))
        if sub is PhaseConfig:
            if not isinstance(value, list):
                raise ConfigError(f"{where}.{name}: expected a list of phases")
            values[name] = [_build(PhaseConfig, v, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
        elif sub is DataSource:
            items = value if isinstance(value, list) else [value]
            values[name] = [DataSource(path=v) if isinstance(v, str) else _build(DataSource, v, f"{where}.{name}")
                            for v in items]
        elif sub is not None:  # a null section (``distill: null`` in a saved recipe) means "not set"
            values[name] = None if value is None else _build(sub, value, f"{where}.{name}")
        elif isinstance(value, list) and name in ("scale", "erase_area"):
            values[name] = tuple(value)
        else:
            values[name] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


_NESTED: dict[tuple[type, str], type] = {
    (TrainConfig, "data"): DataConfig,
    (TrainConfig, "model"): ModelConfig,
    (TrainConfig, "optim"): OptimConfig,
    (TrainConfig, "schedule"): ScheduleConfig,
    (TrainConfig, "loss"): LossConfig,
    (TrainConfig, "augment"): AugmentConfig,
    (TrainConfig, "phases"): PhaseConfig,
    (TrainConfig, "distill"): DistillConfig,
    (DataConfig, "train"): DataSource,
    (DataConfig, "val"): DataSource,
    (DataConfig, "test"): DataSource,
}


def config_from_dict(raw: dict[str, Any], where: str = "recipe") -> TrainConfig:
    return _build(TrainConfig, raw, where)


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read recipe ({str(exc).splitlines()[0]})") from None
    return config_from_dict(raw, str(path))
