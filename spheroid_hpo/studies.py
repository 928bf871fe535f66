"""The Optuna studies of a study file: one per architecture, created once, loaded by workers.

The launcher creates the studies and records on them everything a worker on
another machine needs (the study file, the budget, the data's fingerprint and
its split manifest), so ``spheroid-hpo worker --storage URL`` can join with no
other file.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from spheroid_hpo.config import PrunerConfig, SamplerConfig, StudyConfig, parse_study_text
from spheroid_hpo.errors import InputError
from spheroid_hpo.models import applicable_params
from spheroid_hpo.objective import FAIL_REASON_ATTR, RESUMES_TRIAL_ATTR, checkpoint_owner, retry_links

STUDY_FILE_ATTR = "study_file"
ARCHITECTURE_ATTR = "architecture"
BUDGET_ATTR = "n_trials"
DATA_ATTR = "data"
MANIFEST_ATTR = "split_manifest_csv"
INTERRUPTED = "interrupted"
REQUEUED_FROM_ATTR = "requeued_from"  # on a queued copy of an interrupted trial: that trial's number
METRIC_NAME = "val_macro_f1"  # what a trial's value is; Optuna shows it on the dashboard's axes
# A random id set when a study is first created: a study re-created under the same name
# (its study.db deleted) gets a new one, so it never resumes the old study's checkpoints.
CREATION_ID_ATTR = "creation_id"


@dataclass(frozen=True)
class DataRecord:
    """The data a study was created on, as stored on the study."""

    path: str | None  # None: the generated demo data set
    demo: dict | None
    image_size: int
    fingerprint: str
    manifest_csv: str

    def as_attr(self) -> dict:
        return {"path": self.path, "demo": self.demo, "image_size": self.image_size, "fingerprint": self.fingerprint}


def build_sampler(config: SamplerConfig, *, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The study file's sampler; each worker offsets the seed so workers do not propose the same points."""
    seed = config.seed + worker_index
    if config.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar keeps parallel workers from piling onto the same region of the space.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.n_startup_trials, constant_liar=True)


def build_pruner(config: PrunerConfig, *, max_epochs: int) -> optuna.pruners.BasePruner:
    """The study file's pruner; Hyperband's max resource is the largest epoch count."""
    if config.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=config.n_startup_trials, n_warmup_steps=config.n_warmup_steps
        )
    if config.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=config.min_resource, reduction_factor=config.reduction_factor
        )
    if config.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=config.min_resource, max_resource=max_epochs, reduction_factor=config.reduction_factor
        )
    return optuna.pruners.NopPruner()


def create_studies(
    config: StudyConfig, storage: optuna.storages.BaseStorage, *, study_file_text: str, data: DataRecord
) -> dict[str, optuna.Study]:
    """Create (or reopen) one study per architecture; enqueue the paper's configuration first.

    Re-running on the same storage resumes: finished trials stay, the baseline is
    not enqueued twice, and trials interrupted by Ctrl-C are queued again to go on
    from their checkpoints. A study made on other data refuses to resume.
    """
    studies = {}
    for architecture in config.architectures:
        study = optuna.create_study(
            study_name=config.study_name(architecture), storage=storage, direction="maximize",
            load_if_exists=True,
        )
        # The dashboard's axes say "val_macro_f1" instead of "Objective 0" (the trials' value, see objective.py).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAME])
        recorded = study.user_attrs.get(DATA_ATTR)
        if recorded is not None and recorded["fingerprint"] != data.fingerprint:
            raise InputError(
                f"study {study.study_name} was created on other data (fingerprint {recorded['fingerprint'][:12]}, "
                f"data {recorded['path'] or 'demo'}) than {data.path or 'the demo data'} "
                f"(fingerprint {data.fingerprint[:12]}); use a new study name or storage for new data"
            )
        if CREATION_ID_ATTR not in study.user_attrs:
            study.set_user_attr(CREATION_ID_ATTR, uuid.uuid4().hex[:12])
        study.set_user_attr(STUDY_FILE_ATTR, study_file_text)
        study.set_user_attr(ARCHITECTURE_ATTR, architecture)
        study.set_user_attr(BUDGET_ATTR, config.n_trials)
        study.set_user_attr(DATA_ATTR, data.as_attr())
        study.set_user_attr(MANIFEST_ATTR, data.manifest_csv)
        if not study.trials and config.baseline:
            applies = applicable_params(architecture)
            baseline = {name: value for name, value in config.baseline.items() if name in applies}
            study.enqueue_trial(baseline, user_attrs={"baseline": True})
        requeue_interrupted(study)
        studies[architecture] = study
    return studies


def checkpoint_dir(study: optuna.Study, root: Path) -> Path:
    """The folder under ``root`` for ``study``'s checkpoints, named by study and creation id.

    Studies that share an artifact folder (NFS, a compose volume) never share checkpoints.
    """
    return Path(root) / f"{study.study_name}-{study.user_attrs.get(CREATION_ID_ATTR, 'unversioned')}"


def requeue_interrupted(study: optuna.Study) -> int:
    """Queue again each trial a Ctrl-C interrupted, once; return how many were queued."""
    trials = study.get_trials(deepcopy=False)
    already = _requeued(trials)
    queued = 0
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.user_attrs.get(FAIL_REASON_ATTR) == INTERRUPTED \
                and trial.number not in already:
            study.enqueue_trial(
                trial.params,
                # Which trial this copy stands in for (it counts once) and whose checkpoint it resumes
                # (the first of a chain of interrupted copies): two facts, two attributes.
                user_attrs={**_carried_attrs(trial), REQUEUED_FROM_ATTR: trial.number,
                            RESUMES_TRIAL_ATTR: checkpoint_owner(trial)},
                skip_if_exists=False,
            )
            queued += 1
    return queued


def _requeued(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of the interrupted trials that a queued copy stands in for."""
    # Studies from before REQUEUED_FROM_ATTR only say whose checkpoint a copy resumes.
    return {t.user_attrs.get(REQUEUED_FROM_ATTR, t.user_attrs.get(RESUMES_TRIAL_ATTR)) for t in trials} - {None}


def _carried_attrs(trial: FrozenTrial) -> dict:
    return {key: value for key, value in trial.user_attrs.items() if key == "baseline"}


def find_study_family(storage: optuna.storages.BaseStorage, name: str | None) -> tuple[StudyConfig, str]:
    """The study config and file text recorded in ``storage`` for study ``name``.

    With no name, the storage must hold exactly one study family.
    """
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    families: dict[str, str] = {}
    for summary in summaries:
        family, _, _ = summary.study_name.rpartition(".")
        if family and STUDY_FILE_ATTR in summary.user_attrs:
            families.setdefault(family, summary.user_attrs[STUDY_FILE_ATTR])
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


def load_studies(
    config: StudyConfig, storage: optuna.storages.BaseStorage, *, worker_index: int = 0
) -> dict[str, optuna.Study]:
    """Load (never create) the per-architecture studies, with this worker's sampler and pruner."""
    studies = {}
    for architecture in config.architectures:
        name = config.study_name(architecture)
        try:
            studies[architecture] = optuna.load_study(
                study_name=name,
                storage=storage,
                sampler=build_sampler(config.sampler, worker_index=worker_index),
                pruner=build_pruner(config.pruner, max_epochs=config.max_epochs),
            )
        except KeyError as error:
            raise InputError(
                f"study {name} does not exist in the storage; run `spheroid-hpo launch` to create it first"
            ) from error
    return studies


def budget_used(trials: Iterable[FrozenTrial]) -> int:
    """Trials that count against the budget: all of them except failed ones that were run again."""
    trials = list(trials)
    rerun = _requeued(trials)
    for trial in trials:
        rerun.update(retry_links(trial)[1])
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in rerun))
