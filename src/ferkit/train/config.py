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


@dataclass
class TrainConfig:
    name: str
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = 30
    batch_size: int = 128
    seed: int = 0
    precision: str = "bf16"
    monitor: str = "accuracy"
    early_stopping_patience: int | None = None
    eval_batch_size: int = 512

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A recipe that cannot be used, with the offending key."""


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
        if sub is DataSource:
            items = value if isinstance(value, list) else [value]
            values[name] = [DataSource(path=v) if isinstance(v, str) else _build(DataSource, v, f"{where}.{name}")
                            for v in items]
        elif sub is not None:
            values[name] = _build(sub, value, f"{where}.{name}")
        elif isinstance(value, list) and name in ("scale", "erase_area"):
            values[name] = tuple(value)
        else:
            values[name] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


_NESTED: dict[tuple[type, str], type] = {
    (TrainConfig, "data"): DataConfig,
    (TrainConfig, "model"): ModelConfig,
    (TrainConfig, "optim"): OptimConfig,
    (TrainConfig, "schedule"): ScheduleConfig,
    (TrainConfig, "loss"): LossConfig,
    (TrainConfig, "augment"): AugmentConfig,
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
