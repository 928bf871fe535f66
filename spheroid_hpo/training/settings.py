"""How a configuration is trained, beside its hyperparameters: precision, starting weights, training seed.

One typed setting with its defaults declared here once, read the same way from a study file's
``[training]`` table, ``best.toml``'s ``[training]`` and ``train``'s options. Torch-free, so a
study file is checked without loading PyTorch. (The split has its own: ``data.SplitSpec``.)
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

from spheroid_hpo.errors import InputError
from spheroid_hpo.toml_table import TomlTable
from spheroid_hpo.training.hyperparams import PRECISIONS

__all__ = ["MAX_TRAINING_SEED", "TRAINING_DEFAULTS", "TRAINING_KEYS", "TrainingSettings"]

MAX_TRAINING_SEED = 2**32 - 1  # torch.manual_seed's range


@dataclass(frozen=True)
class TrainingSettings:
    """Validated when made, so a study file, a best.toml and ``train`` refuse the same values."""

    precision: str = "auto"  # auto: bf16 autocast where the hardware runs it natively, else fp32
    weights: str = "none"  # none (random init), imagenet (the local torch hub cache) or a state-dict path
    seed: int = 0  # initialisation, shuffling and rotations; every trial starts from it

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"precision is {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if not isinstance(self.weights, str) or not self.weights:
            raise InputError(f"weights must be none, imagenet or a state-dict path, but got {self.weights!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) \
                or not 0 <= self.seed <= MAX_TRAINING_SEED:
            raise InputError(f"seed must be from 0 to {MAX_TRAINING_SEED}, but got {self.seed!r}")

    @classmethod
    def from_table(cls, table: TomlTable, *, keys: tuple[str, ...] | None = None) -> TrainingSettings:
        """The settings in a ``[training]`` table (only ``keys`` of them allowed, when given); absent keys
        take the defaults above. Checks the table's keys."""
        table.check_keys(keys or TRAINING_KEYS)
        return cls(
            precision=table.choice("precision", PRECISIONS, TRAINING_DEFAULTS.precision),
            weights=table.get("weights", str, TRAINING_DEFAULTS.weights),
            seed=table.positive("seed", int, TRAINING_DEFAULTS.seed, minimum=0, maximum=MAX_TRAINING_SEED),
        )


TRAINING_KEYS = tuple(item.name for item in fields(TrainingSettings))
TRAINING_DEFAULTS = TrainingSettings()  # every default above; frozen, so one instance serves every caller
