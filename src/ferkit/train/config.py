"""Training recipes: YAML files parsed into typed, validated dataclasses (pydantic), with unknown keys rejected.

A typo in a recipe ("lr_shedule") must fail at load, not silently train with a default for hours; so must a value of
the wrong type or out of range (``lr: fast``, ``batch_size: "32"``, ``batch_size: 0``, ``hflip: yes``) and an
argument the architecture does not take. Each is one :class:`ConfigError` line naming the field.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError, field_validator
from pydantic.dataclasses import dataclass

from ferkit.errors import UserInputError
from ferkit.train.augment import AugmentConfig
from ferkit.train.schema import RECIPE, Count, Flag, Fraction, NonNeg, NonNegInt, Positive, Seed, Text


class ConfigError(UserInputError):
    """A recipe that cannot be used, with the offending key."""


@dataclass(config=RECIPE)
class DataSource:
    """One dataset path and the split to take from it (None = all of it)."""

    path: Text
    split: Text | None = None

    @field_validator("split")
    @classmethod
    def _known_split(cls, split: str | None) -> str | None:
        from ferkit.data.samples import canonical_split

        if split is not None:
            canonical_split(split)  # raises ValueError naming the known splits
        return split


def _sources(value: Any) -> Any:
    """A source may be written as a path, a {path, split} mapping, or a list of either."""
    items = value if isinstance(value, list) else [value]
    return [{"path": v} if isinstance(v, str) else v for v in items]


@dataclass(config=RECIPE)
class DataConfig:
    train: list[DataSource]
    val: list[DataSource]
    test: list[DataSource] = field(default_factory=list)
    labels: Text | list[Text] = "fer2013"
    size: Count = 48
    channels: Literal[1, 3] = 1
    ferplus_mode: Literal["majority", "plurality", "soft"] = "majority"
    soft_labels: Flag = False
    clahe: Flag = False
    """Apply CLAHE (:func:`ferkit.faces.enhance.apply_clahe`) to every train/val image after resizing to ``size``;
    the exported card then tells the runtime to do the same to every crop (seed 003)."""
    limit: Count | None = None
    """Keep only the first N training samples of each train source after a shuffle seeded by ``seed`` (smoke runs,
    learning curves; ``ferkit train --limit N``)."""
    val_limit: Count | None = None
    """The same for each validation and test source (``ferkit train --val-limit N``), which score the run."""

    @field_validator("train", "val", "test", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _sources(value)

    @field_validator("train", "val")
    @classmethod
    def _not_empty(cls, sources: list[DataSource]) -> list[DataSource]:
        if not sources:
            raise ValueError("needs at least one data source")
        return sources

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, labels: str | list[str]) -> str | list[str]:
        from ferkit.labels import space

        space(labels)  # raises ValueError naming the known label spaces / emotions
        return labels


@dataclass(config=RECIPE)
class ModelConfig:
    """An architecture from :mod:`ferkit.models` and the arguments its builder takes (checked by name)."""

    arch: Text = "fervgg"
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ferkit.models import check_args

        check_args(self.arch, self.args)


Schedule = Literal["onecycle", "cosine", "plateau", "none", "constant"]


@dataclass(config=RECIPE)
class OptimConfig:
    name: Literal["sgd", "adam", "adamw", "rmsprop", "sam", "sam-sgd", "sam-adam", "sam-adamw"] = "sgd"
    lr: NonNeg = 0.01
    momentum: Fraction = 0.9
    nesterov: Flag = True
    weight_decay: NonNeg = 5e-4
    sam_rho: Positive = 0.05


@dataclass(config=RECIPE)
class ScheduleConfig:
    name: Schedule = "onecycle"
    pct_start: Fraction = 0.2
    plateau_factor: Fraction = 0.5
    plateau_patience: NonNegInt = 5
    min_lr: NonNeg = 1e-6


@dataclass(config=RECIPE)
class LossConfig:
    label_smoothing: Fraction = 0.0
    class_weights: Literal["seed003", "seed004"] | None = None


@dataclass(config=RECIPE)
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

    epochs: Count
    train: Literal["head", "all", "last_n"] = "all"
    last_n: NonNegInt = 0
    lr: NonNeg | None = None
    schedule: Schedule | None = None
    early_stopping_patience: NonNegInt | None = None

    def __post_init__(self) -> None:
        if self.train == "last_n" and self.last_n < 1:
            raise ConfigError(f"phase train: last_n needs last_n >= 1 (blocks to unfreeze), got {self.last_n!r}")
        if self.train != "last_n" and self.last_n:
            raise ConfigError(f"phase last_n: {self.last_n} only applies with train: last_n (got train: {self.train})")


@dataclass(config=RECIPE)
class DistillConfig:
    """Knowledge distillation (:mod:`ferkit.train.distill`): the training target of each image becomes
    ``weight * teacher + (1 - weight) * label``, where ``teacher`` is a model package's probabilities at
    ``temperature`` (averaged over the image and its mirror with ``flip``)."""

    teacher: Text
    weight: Fraction = 0.5
    temperature: Positive = 2.0
    flip: Flag = True


@dataclass(config=RECIPE)
class TrainConfig:
    name: Text
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: Count | None = None
    """Epochs of a single-phase recipe (default 30); leave unset when ``phases`` is given."""
    phases: list[PhaseConfig] = field(default_factory=list)
    batch_size: Count = 128
    seed: Seed = 0
    precision: Literal["bf16", "fp32"] = "bf16"
    monitor: Literal["accuracy", "macro_f1", "loss"] = "accuracy"
    early_stopping_patience: NonNegInt | None = None
    eval_batch_size: Count = 512
    init: Text | None = None
    """Start from these weights instead of a random init: a run folder (its best weights) or a .safetensors file
    (warm restarts: a second schedule on a trained model). A resumed run loads its own checkpoint instead."""
    distill: DistillConfig | None = None

    def __post_init__(self) -> None:
        if self.phases and self.epochs is not None:
            raise ConfigError("give epochs per phase, not a top-level epochs, when phases are set")
        if not self.phases and self.epochs is None:
            self.epochs = 30

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


def config_from_dict(raw: Any, where: str = "recipe") -> TrainConfig:
    """A validated recipe from parsed YAML; ConfigError (one line: where, the field, what is wrong) otherwise."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a recipe is a mapping (name, data, model, ...), not {type(raw).__name__}")
    try:
        return TrainConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from None
    except TypeError as exc:  # a top-level key the dataclass does not have, or a required one missing
        raise ConfigError(f"{where}: {exc}; allowed: {', '.join(f.name for f in dataclasses.fields(TrainConfig))}") \
            from None


def _describe(exc: ValidationError) -> str:
    """The first validation error as 'field.path: what is wrong (got VALUE)', plus how many more there are."""
    errors = exc.errors()
    err = errors[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    value = err.get("input")
    if err["type"] == "unexpected_keyword_argument":
        allowed = _fields_at(err["loc"][:-1])
        text = f"unknown key{'; allowed: ' + ', '.join(allowed) if allowed else ''}"
    elif err["type"] == "missing_keyword_argument" or err["type"] == "missing":
        text = "missing (required)"
    elif err["type"] == "value_error":
        text = err["msg"].removeprefix("Value error, ")
    else:
        shown = repr(value)
        text = f"{err['msg'][0].lower()}{err['msg'][1:]} (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        if isinstance(value, str) and _looks_numeric(value):
            text += "; numbers go without quotes" + (" and YAML needs a dot in 1.0e-3" if "e" in value.lower() else "")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return (f"{loc}: {text}" if loc else text).replace("\n", " ") + more


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fields_at(loc: tuple) -> list[str]:
    """Names of the keys allowed in the recipe section at ``loc`` (for 'unknown key' messages)."""
    cls: Any = TrainConfig
    for part in loc:
        if isinstance(part, int):
            continue
        hint = typing.get_type_hints(cls).get(part)
        cls = next((t for t in _flatten(hint) if dataclasses.is_dataclass(t)), None)
        if cls is None:
            return []
    return [f.name for f in dataclasses.fields(cls)]


def _flatten(hint: Any) -> list[Any]:
    args = typing.get_args(hint)
    return [hint] if not args else [t for a in args for t in _flatten(a)]


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read recipe ({str(exc).splitlines()[0]})") from None
    return config_from_dict(raw, str(path))
