"""The Optuna studies of a study file: one per architecture, created once, loaded by workers.

The launcher creates the studies and records on them everything a worker on
another machine needs (the study file, the budget, the data's fingerprint and
its split manifest), so ``spheroid-hpo worker --storage URL`` can join with no
other file.
"""

from __future__ import annotations

import difflib
import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import optuna
from optuna.distributions import BaseDistribution

from spheroid_hpo.data import DataSource
from spheroid_hpo.errors import InputError
from spheroid_hpo.training.architectures import applicable_params
from spheroid_hpo.tuning import records
from spheroid_hpo.tuning.distinct import DistinctSampler
from spheroid_hpo.tuning.search_space import param_distributions
from spheroid_hpo.tuning.study_file import PrunerConfig, SamplerConfig, StudyConfig, parse_study_text

Builder = TypeVar("Builder")


# Registries of the sampler and pruner a study file may name, as timm registers its models: a
# name maps to its builder, and an unknown name is an error listing the valid ones. The names
# themselves live once, in study_file.py (SAMPLERS, PRUNERS), because the parser validates them and
# must not import Optuna; these mappings are keyed by exactly those names, and
# tests/test_samplers.py fails when a name is added to one side only.


def _tpe(config: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
    # constant_liar keeps parallel workers from piling onto the same region of the space.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.n_startup_trials, constant_liar=True)


def _random(config: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _gp(config: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
    # GPSampler has no constant liar; parallel workers differ by their seeds, and the running
    # trials' points are not yet in its fit, so workers may propose near points.
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=config.n_startup_trials)


def _median(config: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps)


def _successive_halving(config: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=config.min_resource, reduction_factor=config.reduction_factor
    )


def _hyperband(config: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    # Hyperband's max resource is the study's largest epoch count.
    return optuna.pruners.HyperbandPruner(
        min_resource=config.min_resource, max_resource=max_epochs, reduction_factor=config.reduction_factor
    )


def _no_pruner(config: PrunerConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


# name -> builder(sampler section, seed); keys exactly study_file.SAMPLERS, in its order.
SAMPLER_BUILDERS: dict[str, Callable[[SamplerConfig, int], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": _random,
    "gp": _gp,
}
# name -> builder(pruner section, the study's largest epoch count); keys exactly study_file.PRUNERS.
PRUNER_BUILDERS: dict[str, Callable[[PrunerConfig, int], optuna.pruners.BasePruner]] = {
    "median": _median,
    "successive_halving": _successive_halving,
    "hyperband": _hyperband,
    "none": _no_pruner,
}


def _registered(kind: str, name: str, registry: Mapping[str, Builder]) -> Builder:
    """The builder registered as ``name``; an InputError listing the valid names (and the closest) otherwise."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), registry, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown {kind} {name!r}{hint}; choose one of: {', '.join(registry)}") from None


def build_sampler(config: SamplerConfig, *, space: Mapping[str, BaseDistribution] | None = None) -> DistinctSampler:
    """The study file's sampler, seeded anew for each trial from its number and never proposing a
    point of ``space`` (the architecture's searched parameters) that the study already holds."""
    builder = _registered("sampler", config.name, SAMPLER_BUILDERS)
    return DistinctSampler(lambda seed: builder(config, seed), seed=config.seed, space=space or {})


def build_pruner(config: PrunerConfig, *, max_epochs: int) -> optuna.pruners.BasePruner:
    """The study file's pruner; Hyperband's max resource is the largest epoch count."""
    return _registered("pruner", config.name, PRUNER_BUILDERS)(config, max_epochs)


def create_studies(
    config: StudyConfig, storage: optuna.storages.BaseStorage, *, study_file_text: str, data: DataSource,
    manifest_csv: str,
) -> dict[str, optuna.Study]:
    """Create (or reopen) one study per architecture; enqueue the paper's configuration first.

    Re-running on the same storage resumes: finished trials stay, the baseline is
    not enqueued twice, and trials interrupted by Ctrl-C are queued again to go on
    from their checkpoints. A study made on other data, or with another search space or other
    fixed values, refuses to resume.
    """
    refuse_changed_recipe(config, storage)
    studies = {}
    for architecture in config.architectures:
        study = optuna.create_study(
            study_name=config.study_name(architecture), storage=storage, direction="maximize",
            load_if_exists=True,
        )
        # The dashboard's axes say "val_macro_f1" instead of "Objective 0" (the trials' value, see objective.py).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([config.metric])
        recorded = records.data_source(study.user_attrs)
        difference = recorded.difference(data.fingerprint, data.content) if recorded is not None else None
        if difference is not None:
            raise InputError(
                f"study {study.study_name} was created on other data (data {recorded.path or 'demo'}) than "
                f"{data.describe()} ({difference}); use a new study name or storage for new data"
            )
        if recorded is not None and data.split_relaxed is None:
            # A relaunch reads the split made at creation: what that split gave up still holds.
            data = replace(data, split_relaxed=recorded.split_relaxed)
        records.record_recipe(study, study_recipe(config, architecture))
        records.record_study(study, study_file_text=study_file_text, architecture=architecture,
                             budget=config.n_trials, data=data, manifest_csv=manifest_csv)
        if not study.trials and config.baseline:
            applies = applicable_params(architecture)
            baseline = {name: value for name, value in config.baseline.items() if name in applies}
            # skip_if_exists: a second launch started at the same moment must not queue it twice.
            study.enqueue_trial(baseline, user_attrs=records.baseline_attrs(), skip_if_exists=True)
        requeue_interrupted(study)
        studies[architecture] = study
    return studies


def study_recipe(config: StudyConfig, architecture: str) -> dict:
    """What every trial of ``architecture`` trains with besides its sampled values, by study-file key:
    the search space as written (ranges, choices, fixed values) and the training settings."""
    applies = applicable_params(architecture)
    recipe: dict = {}
    for spec in config.search_space:
        if spec.name not in applies:
            continue  # BatchNorm momentum of SqueezeNet changes none of its trials
        if spec.kind == "fixed":
            recipe[f"search_space.{spec.name}"] = spec.value
        elif spec.kind == "categorical":
            recipe[f"search_space.{spec.name}"] = {"choices": list(spec.choices)}
        else:
            recipe[f"search_space.{spec.name}"] = {"low": spec.low, "high": spec.high, "log": spec.log,
                                                   "step": spec.step}
    recipe.update({
        "training.precision": config.training.precision, "training.weights": config.training.weights,
        "training.seed": config.training.seed, "data.image_size": config.data.image_size,
        "data.cv_folds": config.data.cv_folds,
    })
    return json.loads(json.dumps(recipe))  # as the storage gives it back (lists, not tuples)


def refuse_changed_recipe(config: StudyConfig, storage: optuna.storages.BaseStorage) -> None:
    """Stop, before anything is written, when ``config`` would change what the existing studies' trials
    train with; the error names each changed key with its old and new value."""
    for architecture in config.architectures:
        try:
            study = optuna.load_study(study_name=config.study_name(architecture), storage=storage)
        except KeyError:
            continue  # a new study (or a new architecture of the family)
        recorded = records.recipe(study.user_attrs)
        if recorded is None:  # a study from before recipes were recorded: its stored file says
            text = records.study_file_text(study.user_attrs)
            if text is None:
                continue
            recorded = study_recipe(parse_study_text(text, source=Path(f"<study {config.name} in storage>")),
                                    architecture)
        new = study_recipe(config, architecture)
        changed = [f"{key} {recorded.get(key)!r} -> {new.get(key)!r}" for key in sorted(recorded.keys() | new.keys())
                   if recorded.get(key) != new.get(key)]
        if changed:
            raise InputError(
                f"study {study.study_name} was created with other settings than {config.source}: "
                f"{'; '.join(changed)}. Its trials trained with the old ones, so a relaunch keeps them: "
                f"restore them in the file, or set [study] name to a new name to start a new study"
            )


def checkpoint_dir(study: optuna.Study, root: Path) -> Path:
    """The folder under ``root`` for ``study``'s checkpoints, named by study and creation id.

    Studies that share an artifact folder (NFS, a compose volume) never share checkpoints.
    """
    return Path(root) / f"{study.study_name}-{records.creation_id(study)}"


def requeue_interrupted(study: optuna.Study) -> int:
    """Queue again each trial a Ctrl-C interrupted, once; return how many were queued."""
    trials = study.get_trials(deepcopy=False)
    already = records.requeued(trials)
    queued = 0
    for trial in trials:
        if records.was_interrupted(trial) and trial.number not in already:
            study.enqueue_trial(trial.params, user_attrs=records.requeue_attrs(trial), skip_if_exists=False)
            queued += 1
    return queued


def find_study_family(storage: optuna.storages.BaseStorage, name: str | None) -> tuple[StudyConfig, str]:
    """The study config and file text recorded in ``storage`` for study ``name``.

    With no name, the storage must hold exactly one study family.
    """
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    families: dict[str, str] = {}
    for summary in summaries:
        family, _, _ = summary.study_name.rpartition(".")
        text = records.study_file_text(summary.user_attrs)
        if family and text is not None:
            families.setdefault(family, text)
    if name is None:
        if len(families) != 1:
            listed = ", ".join(sorted(families)) or "none"
            raise InputError(f"pass --study NAME: the storage holds these studies: {listed}")
        name = next(iter(families))
    if name not in families:
        listed = ", ".join(sorted(families)) or "none"
        raise InputError(
            f"no study {name!r} in the storage (it holds: {listed}); start it with "
            f"`spheroid-hpo launch --study studies/{name}.toml` first"
        )
    text = families[name]
    return parse_study_text(text, source=Path(f"<study {name} in storage>")), text


def load_studies(config: StudyConfig, storage: optuna.storages.BaseStorage) -> dict[str, optuna.Study]:
    """Load (never create) the per-architecture studies, with this worker's sampler and pruner."""
    studies = {}
    for architecture in config.architectures:
        name = config.study_name(architecture)
        try:
            studies[architecture] = optuna.load_study(
                study_name=name,
                storage=storage,
                sampler=build_sampler(
                    config.sampler, space=param_distributions(config.search_space, architecture=architecture)
                ),
                pruner=build_pruner(config.pruner, max_epochs=config.max_epochs),
            )
        except KeyError as error:
            raise InputError(
                f"study {name} does not exist in the storage; run `spheroid-hpo launch` to create it first"
            ) from error
    return studies
