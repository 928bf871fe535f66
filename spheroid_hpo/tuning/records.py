"""The trial and study records: the one place that spells an Optuna attribute key.

Writers (the objective, the studies, the workers) and readers (progress, the report,
best.toml, export) go through the names and helpers here, so renaming a key on the
writing side cannot silently break a reader.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from spheroid_hpo.data import DataSource
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.tuning.study_file import METRICS

# What a trial's value is; Optuna shows it on the dashboard's axes.
METRIC_NAME = METRICS[0]

# --- study attributes, set when the launcher creates the study -------------------------------
STUDY_FILE = "study_file"  # the study file's text (its storage password removed)
ARCHITECTURE = "architecture"
BUDGET = "n_trials"
DATA = "data"  # DataSource.as_dict()
MANIFEST = "split_manifest_csv"  # the split every trial trained and validated on
# A random id set when a study is first created: a study re-created under the same name
# (its study.db deleted) gets a new one, so it never resumes the old study's checkpoints.
CREATION_ID = "creation_id"
# What every trial trains with beyond its sampled params: the search space (ranges, choices, fixed
# values) and the training settings, set once when the study is created and never overwritten, so
# a relaunch with an edited study file is compared against the study's own first file.
RECIPE = "recipe"

# --- trial attributes ------------------------------------------------------------------------
BASELINE = "baseline"  # the paper's configuration, enqueued first
RESUMES_TRIAL = "resumes_trial"  # on a re-queued interrupted trial: whose checkpoint it resumes
REQUEUED_FROM = "requeued_from"  # on a re-queued interrupted trial: the trial it stands in for
FAIL_REASON = "fail_reason"
FIXED_VALUES = "fixed_values"  # older trials: the fixed values they trained with (Optuna records only suggested ones)
HYPERPARAMS = "hyperparams"  # Hyperparams.as_dict(): every value the trial trained with, sampled or not
# Optuna's own system attribute on a queued trial: the params it will run with.
OPTUNA_QUEUED_PARAMS = "fixed_params"
INTERRUPTED = "interrupted"  # the FAIL_REASON of a trial stopped by Ctrl-C or SIGTERM
DEVICE = "device"
PRECISION = "precision"  # what the trial trained in: fp32, bf16 or fp16 (precision "auto" resolved)
TORCH_THREADS = "torch_threads"  # CPU results depend on the thread count (reduction order)
HOST = "host"  # the machine (container) that ran the trial
SLURM_TASK = "slurm_task"  # under SLURM, the array task (JOB_TASK, as scancel takes it) that ran the trial
PARAMETER_COUNT = "parameter_count"
CV_SCORES = "cv_fold_val_macro_f1"
VAL_F1_PER_CLASS = "val_f1_per_class"
VAL_ACCURACY = "val_accuracy"
CLASS_NAMES = "class_names"
CALIBRATION = "calibration"
MODEL_ARTIFACT_ID = "model_artifact_id"
WALL_TIME_SECONDS = "wall_time_seconds"
EPOCHS_TRAINED = "epochs_trained"
EPOCHS_RESTORED = "epochs_restored"
VAL_MACRO_F1_LAST = "val_macro_f1_last"
TRAIN_IMAGES_PER_SECOND = "train_images_per_second"

# The artifact a trial uploads its per-epoch history as; the report finds it by this name.
HISTORY_ARTIFACT = "history.csv"


# --- study records ---------------------------------------------------------------------------

def record_study(study: optuna.Study, *, study_file_text: str, architecture: str, budget: int, data: DataSource,
                 manifest_csv: str) -> None:
    """Record on ``study`` everything a worker on another machine needs to join it."""
    if CREATION_ID not in study.user_attrs:
        study.set_user_attr(CREATION_ID, uuid.uuid4().hex[:12])
    study.set_user_attr(STUDY_FILE, study_file_text)
    study.set_user_attr(ARCHITECTURE, architecture)
    study.set_user_attr(BUDGET, budget)
    study.set_user_attr(DATA, data.as_dict())
    study.set_user_attr(MANIFEST, manifest_csv)


def record_recipe(study: optuna.Study, recipe: dict) -> dict:
    """Record ``recipe`` on a new study; return the one the study holds (the first ever recorded)."""
    recorded = study.user_attrs.get(RECIPE)
    if recorded is None:
        study.set_user_attr(RECIPE, recipe)
        return recipe
    return recorded


def recipe(study_attrs: Mapping) -> dict | None:
    """The search space and training settings a study was created with (None on older studies)."""
    return study_attrs.get(RECIPE)


def data_source(study_attrs: Mapping) -> DataSource | None:
    """The data a study was created on, or None for a study ``launch`` did not make."""
    raw = study_attrs.get(DATA)
    return DataSource.from_dict(raw) if raw is not None else None


def manifest_csv(study_attrs: Mapping) -> str | None:
    """The split manifest CSV a study's trials trained and validated on."""
    return study_attrs.get(MANIFEST)


def study_file_text(study_attrs: Mapping) -> str | None:
    """The study file recorded on a study (None on a study not made by ``launch``)."""
    return study_attrs.get(STUDY_FILE)


def budget(study: optuna.Study) -> int | None:
    """The study's trial budget, as recorded when it was created."""
    return study.user_attrs.get(BUDGET)


def creation_id(study: optuna.Study) -> str:
    """The id set when the study was first created ("unversioned" for older studies)."""
    return study.user_attrs.get(CREATION_ID, "unversioned")


# --- trial records ---------------------------------------------------------------------------

def machine_of(trial: FrozenTrial) -> tuple[str | None, str | None, int | None]:
    """Where ``trial`` ran, as it recorded: (device, host, CPU thread count); None where it did not say."""
    attrs = trial.user_attrs
    return attrs.get(DEVICE), attrs.get(HOST), attrs.get(TORCH_THREADS)


def is_baseline(trial: FrozenTrial) -> bool:
    """Whether ``trial`` is (a re-queued copy of) the paper's configuration."""
    return bool(trial.user_attrs.get(BASELINE))


def baseline_attrs() -> dict:
    """User attributes that mark an enqueued trial as the baseline."""
    return {BASELINE: True}


def planned_params(trial: FrozenTrial) -> dict:
    """The params ``trial`` ran or runs with; for a queued trial, those it was queued with."""
    return trial.params or dict(trial.system_attrs.get(OPTUNA_QUEUED_PARAMS) or {})


def trained_params(trial: FrozenTrial) -> dict:
    """Every value ``trial`` trained with, as it recorded them (``record_hyperparams``); for trials
    from before that record, the fixed values they recorded, then their sampled params."""
    recorded = trial.user_attrs.get(HYPERPARAMS)
    if recorded is not None:
        return dict(recorded)
    return {**trial.user_attrs.get(FIXED_VALUES, {}), **trial.params}


def trained_hyperparams(trial: FrozenTrial) -> Hyperparams:
    """The configuration ``trial`` trained with, whole and validated: what a retraining trains."""
    return Hyperparams.from_params(trained_params(trial))


# --- trial writers: what the objective records as a trial runs ---------------------------------

def record_hyperparams(trial: optuna.Trial, hyperparams: Hyperparams) -> None:
    """Record every value ``trial`` trains with; Optuna itself keeps only the sampled ones."""
    trial.set_user_attr(HYPERPARAMS, hyperparams.as_dict())


def record_machine(trial: optuna.Trial, *, device: str, threads: int, host: str, slurm_task: str | None) -> None:
    """Where ``trial`` runs: the device, the CPU thread count (CPU results depend on it, through the
    reduction order; reproduce needs it), the host (a retried trial names the worker that took it
    over) and, under SLURM, the array task."""
    trial.set_user_attr(DEVICE, device)
    trial.set_user_attr(TORCH_THREADS, threads)
    trial.set_user_attr(HOST, host)
    if slurm_task is not None:
        trial.set_user_attr(SLURM_TASK, slurm_task)


def record_parameter_count(trial: optuna.Trial, count: int) -> None:
    """The number of parameters of the model ``trial`` trains."""
    trial.set_user_attr(PARAMETER_COUNT, count)


def record_precision(trial: optuna.Trial, precision: str) -> None:
    """What ``trial`` trains in (``fp32``, ``bf16`` or ``fp16``: precision ``auto`` resolved on its worker)."""
    trial.set_user_attr(PRECISION, precision)


def record_cv_scores(trial: optuna.Trial, scores: Iterable[float]) -> None:
    """Each fold's last-epoch validation macro-F1 so far, in fold order."""
    trial.set_user_attr(CV_SCORES, list(scores))


def record_validation(trial: optuna.Trial, metrics, *, class_names: Iterable[str], calibration: dict) -> None:
    """The trained model's validation scores per class (a ``ClassificationMetrics``) and its calibration."""
    trial.set_user_attr(VAL_F1_PER_CLASS, [round(f, 6) for f in metrics.f1])
    trial.set_user_attr(VAL_ACCURACY, metrics.accuracy)
    trial.set_user_attr(CLASS_NAMES, list(class_names))
    trial.set_user_attr(CALIBRATION, calibration)


def record_model_artifact(trial: optuna.Trial, artifact_id: str) -> None:
    """The artifact id of the model.pt ``trial`` uploaded."""
    trial.set_user_attr(MODEL_ARTIFACT_ID, artifact_id)


def record_run(trial: optuna.Trial, *, wall_time_seconds: float, epochs_trained: int, epochs_restored: int,
               val_macro_f1_last: float | None, images_per_second: float | None) -> None:
    """How the training run went (what ``RunRecord.of`` reads back); None values are not recorded."""
    trial.set_user_attr(WALL_TIME_SECONDS, wall_time_seconds)
    trial.set_user_attr(EPOCHS_TRAINED, epochs_trained)
    trial.set_user_attr(EPOCHS_RESTORED, epochs_restored)
    if val_macro_f1_last is not None:
        trial.set_user_attr(VAL_MACRO_F1_LAST, val_macro_f1_last)
    if images_per_second is not None:
        trial.set_user_attr(TRAIN_IMAGES_PER_SECOND, images_per_second)


def record_failure(trial: optuna.Trial, error: BaseException) -> None:
    """Why ``trial`` failed, as one line of at most 1000 characters."""
    trial.set_user_attr(FAIL_REASON, f"{error.__class__.__name__}: {error}"[:1000])


def fail_reason(trial: FrozenTrial) -> str | None:
    """Why ``trial`` failed, as recorded (None when it did not say)."""
    return trial.user_attrs.get(FAIL_REASON)


def was_interrupted(trial: FrozenTrial) -> bool:
    """A trial stopped by Ctrl-C or SIGTERM, to be queued again."""
    return trial.state == TrialState.FAIL and fail_reason(trial) == INTERRUPTED


def retry_links(trial: FrozenTrial) -> tuple[int | None, list[int]]:
    """The trial a heartbeat retry stands for, and every earlier attempt of it."""
    # Optuna marks these accessors experimental; the warning means nothing to our users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return (
            RetryHeartbeatStaleTrialCallback.retried_trial_number(trial),
            RetryHeartbeatStaleTrialCallback.retry_history(trial),
        )


def checkpoint_owner(trial: FrozenTrial) -> int:
    """The trial whose checkpoint ``trial`` continues: itself, or the one it retries or resumes."""
    resumed = trial.user_attrs.get(RESUMES_TRIAL)
    if resumed is not None:
        return int(resumed)
    retried, _ = retry_links(trial)
    return trial.number if retried is None else retried


def requeue_attrs(trial: FrozenTrial) -> dict:
    """User attributes of the queued copy of interrupted ``trial``: which trial it stands in for
    (it counts once), whose checkpoint it resumes (the first of a chain of copies), the baseline mark."""
    carried = {key: value for key, value in trial.user_attrs.items() if key == BASELINE}
    return {**carried, REQUEUED_FROM: trial.number, RESUMES_TRIAL: checkpoint_owner(trial)}


def requeued(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of the interrupted trials that a queued copy stands in for."""
    # Studies from before REQUEUED_FROM only say whose checkpoint a copy resumes.
    return {t.user_attrs.get(REQUEUED_FROM, t.user_attrs.get(RESUMES_TRIAL)) for t in trials} - {None}


def budget_used(trials: Iterable[FrozenTrial]) -> int:
    """Trials that count against the budget: all of them except failed ones that were run again."""
    trials = list(trials)
    rerun = requeued(trials)
    for trial in trials:
        rerun.update(retry_links(trial)[1])
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in rerun))


def best_trial(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The completed trial with the highest validation macro-F1; the earliest wins a tie."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(complete, key=lambda t: (t.value, -t.number), default=None)


def baseline_trial(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The paper's original configuration: the first trial enqueued with the baseline mark."""
    marked = [t for t in trials if is_baseline(t)]
    # A re-queued (interrupted) baseline carries the mark too; the one that finished counts.
    finished = [t for t in marked if t.state == TrialState.COMPLETE]
    return min(finished or marked, key=lambda t: t.number, default=None)


@dataclass(frozen=True)
class RunRecord:
    """What a trial's training run recorded about itself (missing values read as 0 or None)."""

    wall_time_seconds: float
    epochs_trained: int
    epochs_restored: int
    images_per_second: float | None
    parameter_count: int | None
    torch_threads: int | None
    model_artifact_id: str | None
    calibration: dict | None
    cv_scores: tuple[float, ...]
    precision: str | None  # None: recorded before precisions were (then the study file's value holds)

    @classmethod
    def of(cls, trial: FrozenTrial) -> RunRecord:
        """Read ``trial``'s run record."""
        attrs = trial.user_attrs
        return cls(
            wall_time_seconds=float(attrs.get(WALL_TIME_SECONDS, 0.0)),
            epochs_trained=int(attrs.get(EPOCHS_TRAINED, 0)),
            epochs_restored=int(attrs.get(EPOCHS_RESTORED, 0)),
            images_per_second=attrs.get(TRAIN_IMAGES_PER_SECOND),
            parameter_count=attrs.get(PARAMETER_COUNT),
            torch_threads=attrs.get(TORCH_THREADS),
            model_artifact_id=attrs.get(MODEL_ARTIFACT_ID),
            calibration=attrs.get(CALIBRATION),
            cv_scores=tuple(attrs.get(CV_SCORES) or ()),
            precision=attrs.get(PRECISION),
        )

    @property
    def epochs_trained_here(self) -> int:
        """Epochs this trial trained itself; epochs restored from an interrupted run's checkpoint
        were trained (and timed) by that run."""
        return self.epochs_trained - self.epochs_restored
