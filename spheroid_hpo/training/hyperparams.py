"""The hyperparameters a training run takes: their names, types, bounds, and how they are written.

Torch-free, so a study file can be checked without loading PyTorch. The study file's
search space, the trials, best.toml and the report all use these tables, so a value
gets the same checks and is written the same way everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from spheroid_hpo.toml_table import TomlTable

__all__ = [
    "CATEGORICAL_VALUES", "CLASS_WEIGHTS", "LR_SCHEDULES", "MIN_BATCH_SIZE", "PARAM_BOUNDS", "PRECISIONS",
    "REQUIRED_PARAMS", "TUNABLE_PARAMS", "Hyperparams", "format_param", "format_params", "param_label", "read_param",
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
}
# How each is labelled: (short, in prose, in LaTeX).
_LABELS = {
    "epochs": ("ep", "epochs", "Epochs"),
    "lr": ("lr", "learning rate", "Learning rate"),
    "rotation": ("rot", "rotation (°)", "Rotation"),
    "batch_size": ("bs", "batch size", "Batch size"),
    "bn_momentum": ("bnm", "BN momentum", "BN momentum"),
    "class_weights": ("cw", "class weights", "Class weights"),
    "lr_schedule": ("sched", "lr schedule", "LR schedule"),
}
_STYLES = ("short", "title", "latex")


@dataclass(frozen=True)
class Hyperparams:
    """What a trial, a best.toml or the report passes to training: one point of the search space."""

    epochs: int
    lr: float
    rotation: float
    batch_size: int
    bn_momentum: float | None = None  # None: each net's own BatchNorm momentum
    class_weights: str = "none"
    lr_schedule: str = "constant"

    @classmethod
    def from_params(cls, params: Mapping[str, object]) -> Hyperparams:
        """From a trial's (or a best.toml's) parameter dict; absent optional ones take their defaults."""
        unknown = set(params) - set(TUNABLE_PARAMS)
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown)}; known: {', '.join(TUNABLE_PARAMS)}")
        return cls(
            epochs=int(params["epochs"]), lr=float(params["lr"]), rotation=float(params["rotation"]),
            batch_size=int(params["batch_size"]),
            bn_momentum=float(params["bn_momentum"]) if params.get("bn_momentum") is not None else None,
            class_weights=str(params.get("class_weights", "none")),
            lr_schedule=str(params.get("lr_schedule", "constant")),
        )

    def learning_rate(self, epoch: int) -> float:
        """Adam's learning rate in ``epoch`` (1 .. epochs) under ``lr_schedule``."""
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))
        return self.lr

    def as_dict(self) -> dict:
        """Every field, for metrics.json."""
        return asdict(self)


# The hyperparameters every search space and best.toml sets (the others have defaults).
REQUIRED_PARAMS: tuple[str, ...] = tuple(f.name for f in fields(Hyperparams) if f.default is MISSING)


def read_param(table: TomlTable, key: str, name: str) -> Any:
    """The value of ``key`` in a TOML ``table`` as hyperparameter ``name`` takes it: of its type, and
    among its CATEGORICAL_VALUES or within its PARAM_BOUNDS (a fixed value, a choice, a best.toml's)."""
    if name in CATEGORICAL_VALUES:
        return table.choice(key, CATEGORICAL_VALUES[name])
    if name in PARAM_BOUNDS:
        return table.bounded(key, TUNABLE_PARAMS[name], PARAM_BOUNDS[name], param=name)
    return table.get(key, TUNABLE_PARAMS[name])


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
    if name in ("lr", "bn_momentum"):
        return f"{value:.1e}"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.1f}"
    return str(int(value))


def format_params(params: Mapping[str, object], *, short: bool = False) -> str:
    """``epochs=60 lr=1.0e-04 rotation=20 batch_size=10`` (``ep=60 lr=1.0e-04 ...`` when short)."""
    return " ".join(f"{param_label(name, 'short') if short else name}={format_param(name, value)}"
                    for name, value in params.items())
