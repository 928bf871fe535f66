"""The hyperparameters a training run takes: their names, types, bounds, and how they are written.

Torch-free, so a study file can be checked without loading PyTorch. The study file's
search space, the trials, best.toml and the report all use these tables, so a value
gets the same checks and is written the same way everywhere.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from spheroid_hpo.errors import InputError
from spheroid_hpo.toml_table import TomlTable

__all__ = [
    "CATEGORICAL_VALUES", "CLASS_WEIGHTS", "LR_SCHEDULES", "MIN_BATCH_SIZE", "PARAM_BOUNDS", "PRECISIONS",
    "REQUIRED_PARAMS", "TUNABLE_PARAMS", "Hyperparams", "format_param", "format_params", "param_label",
    "param_problem", "read_param",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CLASS_WEIGHTS = ("none", "balanced")
# constant: the paper's Adam at one learning rate. cosine: the rate falls along half a cosine
# from lr in the first epoch to nearly 0 in the last, so the last epochs (whose validation score
# is the trial's value) move the weights little and that score stops jumping from epoch to epoch.
LR_SCHEDULES = ("constant", "cosine")
MIN_BATCH_SIZE = 2  # BatchNorm cannot normalise a batch of one image in train mode

# The hyperparameters a trial can vary, and the type each takes.
TUNABLE_PARAMS: dict[str, type] = {
    "epochs": int,
    "lr": float,
    "rotation": float,
    "batch_size": int,
    "bn_momentum": float,
    "class_weights": str,
    "weight_decay": float,
    "lr_schedule": str,
}
# The values a string-valued tunable may take.
CATEGORICAL_VALUES: dict[str, tuple[str, ...]] = {"class_weights": CLASS_WEIGHTS, "lr_schedule": LR_SCHEDULES}
# The values each numeric hyperparameter may take, fixed or as a range's ends: (low, high,
# low excluded?, why). One table, so a fixed value gets exactly the checks a range gets.
PARAM_BOUNDS: dict[str, tuple[float, float, bool, str]] = {
    "epochs": (1, 10_000, False, "a trial trains at least one epoch"),
    "lr": (0.0, 1.0, True, "Adam's learning rate is positive"),
    "rotation": (0.0, 180.0, False, "rotation is +/- degrees"),
    "batch_size": (MIN_BATCH_SIZE, 4096, False, "BatchNorm needs two images per batch"),
    "bn_momentum": (0.0, 1.0, True, "BatchNorm momentum lies in (0, 1]"),
    "weight_decay": (0.0, 1.0, False, "Adam's L2 penalty is not negative"),
}
# How each is labelled: (short, in prose, in LaTeX).
_LABELS = {
    "epochs": ("ep", "epochs", "Epochs"),
    "lr": ("lr", "learning rate", "Learning rate"),
    "rotation": ("rot", "rotation (°)", "Rotation"),
    "batch_size": ("bs", "batch size", "Batch size"),
    "bn_momentum": ("bnm", "BN momentum", "BN momentum"),
    "class_weights": ("cw", "class weights", "Class weights"),
    "weight_decay": ("wd", "weight decay", "Weight decay"),
    "lr_schedule": ("sched", "lr schedule", "LR schedule"),
}
_STYLES = ("short", "title", "latex")


@dataclass(frozen=True)
class Hyperparams:
    """What a trial, a best.toml, ``train`` or the report passes to training: one point of the search space.

    Checked when made, against TUNABLE_PARAMS, PARAM_BOUNDS and CATEGORICAL_VALUES, so every
    entry point (``train --lr 5``, a study file's ``lr = 5``, a hand-edited best.toml) refuses
    the same values with the same line. Ints given for float fields become floats.
    """

    epochs: int
    lr: float
    rotation: float
    batch_size: int
    bn_momentum: float | None = None  # None: each net's own BatchNorm momentum
    class_weights: str = "none"
    weight_decay: float = 0.0  # Adam's L2 penalty; the paper trained without one
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None and item.default is None:
                continue
            problem = param_problem(item.name, value)
            if problem is not None:
                raise InputError(f"{item.name} {problem}")
            # Stored as the declared type: an int learning rate from a TOML file, a numpy int from Optuna.
            object.__setattr__(self, item.name, TUNABLE_PARAMS[item.name](value))

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> Hyperparams:
        """From a trial's (or a best.toml's) parameter dict; absent optional ones take their defaults."""
        unknown = sorted(set(params) - set(TUNABLE_PARAMS))
        missing = [name for name in REQUIRED_PARAMS if name not in params]
        if unknown or missing:
            raise InputError(f"hyperparameters {unknown or missing} are {'unknown' if unknown else 'missing'}; "
                             f"known: {', '.join(TUNABLE_PARAMS)} (required: {', '.join(REQUIRED_PARAMS)})")
        return cls(**params)

    def learning_rate(self, epoch: int) -> float:
        """Adam's learning rate in ``epoch`` (1 .. epochs) under ``lr_schedule``."""
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))
        return self.lr

    def as_dict(self) -> dict:
        """Every field, for metrics.json and a trial's record."""
        return asdict(self)


# The hyperparameters every search space and best.toml sets (the others have defaults).
REQUIRED_PARAMS: tuple[str, ...] = tuple(f.name for f in fields(Hyperparams) if f.default is MISSING)


def param_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for hyperparameter ``name`` (its type, its CATEGORICAL_VALUES or
    its PARAM_BOUNDS), worded to follow the name or TOML key; None when nothing is."""
    kind = TUNABLE_PARAMS[name]
    if kind is str:
        choices = CATEGORICAL_VALUES.get(name)
        if not isinstance(value, str) or (choices is not None and value not in choices):
            return f"is {value!r}; choose one of: {', '.join(choices or ())}"
        return None
    wanted = numbers.Integral if kind is int else numbers.Real
    if isinstance(value, bool) or not isinstance(value, wanted):
        return f"must be {kind.__name__}, but got {value!r}"
    if name in PARAM_BOUNDS:
        low, high, low_excluded, why = PARAM_BOUNDS[name]
        too_low = value <= low if low_excluded else value < low
        if not math.isfinite(value) or too_low or value > high:
            interval = f"{'(' if low_excluded else '['}{low}, {high}]"
            return f"must lie in {interval} ({why}), but got {name} = {value!r}"
    return None


def read_param(table: TomlTable, key: str, name: str) -> Any:
    """The value of ``key`` in a TOML ``table`` as hyperparameter ``name`` takes it: of its type, and
    among its CATEGORICAL_VALUES or within its PARAM_BOUNDS (a fixed value, a choice, a best.toml's)."""
    value = table.get(key, TUNABLE_PARAMS[name])
    problem = param_problem(name, value)
    if problem is not None:
        raise table.error(key, problem)
    return value


def param_label(name: str, style: str) -> str:
    """How hyperparameter ``name`` is labelled in ``style`` (short, title or latex); unknown names as they are."""
    if style not in _STYLES:
        raise ValueError(f"style must be one of {', '.join(_STYLES)}, but got {style=}")
    return _LABELS[name][_STYLES.index(style)] if name in _LABELS else name


def format_param(name: str, value) -> str:
    """One hyperparameter's value as people read it: ``1.0e-04`` for rates, ``17.2`` or ``60`` otherwise."""
    if value is None:
        return "–"
    if isinstance(value, str):  # a categorical choice, e.g. class_weights
        return value
    if name in ("lr", "bn_momentum", "weight_decay"):
        return f"{value:.1e}"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.1f}"
    return str(int(value))


def format_params(params: Mapping[str, object], *, short: bool = False) -> str:
    """``epochs=60 lr=1.0e-04 rotation=20 batch_size=10`` (``ep=60 lr=1.0e-04 ...`` when short)."""
    return " ".join(f"{param_label(name, 'short') if short else name}={format_param(name, value)}"
                    for name, value in params.items())
