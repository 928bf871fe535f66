"""The one place where a trial's hyperparameters are drawn from the study's search space."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from spheroid_hpo.training.architectures import applicable_params
from spheroid_hpo.tuning.study_file import ParamSpec


def suggest_params(
    trial: optuna.Trial, space: Sequence[ParamSpec], *, architecture: str | None = None
) -> dict[str, float | str]:
    """Ask ``trial`` for a value of every parameter in ``space``; fixed ones pass through.

    With ``architecture``, parameters that do not apply to it (see ``applicable_params``)
    are neither suggested nor returned, so they are never stored with its trials.
    """
    params: dict[str, float | str] = {}
    applies = applicable_params(architecture) if architecture is not None else None
    for spec in space:
        if applies is not None and spec.name not in applies:
            continue
        if spec.kind == "fixed":
            params[spec.name] = spec.value
        elif spec.kind == "categorical":
            params[spec.name] = trial.suggest_categorical(spec.name, list(spec.choices))
        elif spec.kind == "int":
            params[spec.name] = trial.suggest_int(
                spec.name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log
            )
        else:
            params[spec.name] = trial.suggest_float(spec.name, spec.low, spec.high, step=spec.step, log=spec.log)
    return params


def param_distributions(space: Sequence[ParamSpec], *, architecture: str) -> dict[str, BaseDistribution]:
    """The distribution of every parameter ``suggest_params`` asks ``architecture``'s trials for."""
    applies = applicable_params(architecture)
    distributions: dict[str, BaseDistribution] = {}
    for spec in space:
        if spec.name not in applies or spec.kind == "fixed":
            continue
        if spec.kind == "categorical":
            distributions[spec.name] = CategoricalDistribution(list(spec.choices))
        elif spec.kind == "int":
            distributions[spec.name] = IntDistribution(int(spec.low), int(spec.high), step=int(spec.step or 1),
                                                       log=spec.log)
        else:
            distributions[spec.name] = FloatDistribution(spec.low, spec.high, step=spec.step, log=spec.log)
    return distributions
