"""Where a trial meets a training run: suggest, train, report and prune, store results.

A trial trains on the train split and is judged on the validation split only; the
test split never reaches this module, so nobody can pick a configuration by its
test score. The trial's value is the validation macro-F1 of its last epoch.

With cross-validation (``[data] cv_folds = K``) a trial trains K times, once per fold of
train+val, and its value is the mean of the folds' last-epoch validation macro-F1. It then
reports that running mean after each fold (step = fold number), so a pruner compares trials
at fold granularity; the stored model and figures are the last fold's.
"""

from __future__ import annotations

import csv
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import torch
from optuna.artifacts import upload_artifact
from optuna.trial import FrozenTrial, TrialState

from spheroid_hpo.data import TrainingData
from spheroid_hpo.training import loop
from spheroid_hpo.training.device import resolved_precision
from spheroid_hpo.training.figures import plot_confusion, plot_curves
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.models import count_parameters
from spheroid_hpo.training.recipe import Checkpoint, FitHooks, FitResult, TrainSpec, fit
from spheroid_hpo.training.saved_model import MODEL_FILE, save_model
from spheroid_hpo.training.settings import TRAINING_DEFAULTS
from spheroid_hpo.tuning import records
from spheroid_hpo.tuning.search_space import suggest_params
from spheroid_hpo.tuning.study_file import ParamSpec


class TrialTakenOver(BaseException):
    """Raised in a worker whose running trial another worker has taken over (its heartbeat
    went stale while the worker was paused). Not an Exception, so Optuna neither catches it
    nor tries to record a result for a trial that is no longer this worker's."""


def _taken_over(trial: optuna.Trial) -> bool:
    return trial.storage.get_trial(trial._trial_id).state != TrialState.RUNNING


def _frozen(trial: optuna.Trial) -> FrozenTrial:
    # The retry link lives in system attributes, which only the frozen trial exposes.
    running = trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return next(t for t in running if t.number == trial.number)


def _slurm_task() -> str | None:
    """The SLURM job running this process, ``JOB_TASK`` for an array task (what ``scancel`` takes); else None."""
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else os.environ.get("SLURM_JOB_ID")


class _TrialHooks(FitHooks):
    """What a trial adds to the training recipe: checkpoints of its own, reports to the pruner,
    and a check before every write that the trial is still this worker's."""

    def __init__(self, trial: optuna.Trial, *, folds: int, epochs: int, checkpoint_dir: Path, params: dict,
                 precision: str, device: torch.device):
        self.trial, self.epochs, self.params = trial, epochs, params
        self.precision, self.device = precision, device
        self.folds = folds  # how many folds the trial trains (0: none, no cross-validation)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.owner = records.checkpoint_owner(_frozen(trial))
        self.history: list[loop.EpochStats] = []  # the current fold's epochs so far
        self.checkpoint: Path | None = None  # the current fold's

    def still_ours(self) -> None:
        """A worker paused past its heartbeat finds its trial failed and retried by another
        worker, which resumes from this checkpoint: stop before overwriting it."""
        if _taken_over(self.trial):
            raise TrialTakenOver(f"trial {self.trial.number} was taken over by another worker")

    def fold_started(self, fold: int) -> Checkpoint:
        self.history.clear()
        name = f"trial-{self.owner}-fold{fold}.pt" if self.folds else f"trial-{self.owner}.pt"
        self.checkpoint = self.checkpoint_dir / name
        # Which study (name and creation id, in the folder name), trial, fold and point the
        # checkpoint belongs to: another study's checkpoint in a shared folder is refused, never resumed.
        tag = {"study": self.checkpoint_dir.name, "trial": self.owner, "fold": fold, "params": dict(self.params)}
        return Checkpoint(path=self.checkpoint, tag=tag, guard=self.still_ours)

    def model_built(self, model) -> None:
        records.record_parameter_count(self.trial, count_parameters(model))
        records.record_precision(self.trial, resolved_precision(self.precision, self.device, model=model))

    def epoch_end(self, fold: int, stats: loop.EpochStats) -> None:
        self.still_ours()
        self.history.append(stats)
        if self.folds:
            return  # cross-validated trials report once per fold, in fold_end
        self.trial.report(stats.val_macro_f1, stats.epoch)
        # After the last epoch there is nothing left to save: the trial completes, and its
        # value tells the sampler more than a pruned state would.
        if stats.epoch < self.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {stats.epoch} at val macro-F1 {stats.val_macro_f1:.3f}")

    def fold_end(self, fold: int, scores: tuple[float, ...]) -> None:
        if not self.folds:
            return
        self.still_ours()
        records.record_cv_scores(self.trial, scores)
        self.checkpoint.unlink(missing_ok=True)
        self.trial.report(statistics.fmean(scores), fold)
        if fold < self.folds and self.trial.should_prune():  # never after the last fold
            raise optuna.TrialPruned(f"pruned after fold {fold} at mean val macro-F1 {statistics.fmean(scores):.3f}")


def build_objective(
    *,
    architecture: str,
    data: TrainingData,
    search_space: Sequence[ParamSpec],
    device: torch.device,
    artifact_store,
    checkpoint_dir: Path,
    precision: str = TRAINING_DEFAULTS.precision,
    weights: str = TRAINING_DEFAULTS.weights,
    seed: int = TRAINING_DEFAULTS.seed,
) -> Callable[[optuna.Trial], float]:
    """The function ``study.optimize`` calls for each trial of ``architecture``: suggest a point,
    train it with the one recipe (``training.recipe.fit``), record it and upload its artifacts."""

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, search_space, architecture=architecture)
        hyperparams = Hyperparams.from_params(params)
        # Optuna records only sampled values; the trial keeps its whole configuration, which
        # the report, best.toml and the retrainings read back.
        records.record_hyperparams(trial, hyperparams)
        records.record_machine(trial, device=str(device), threads=torch.get_num_threads(), host=socket.gethostname(),
                               slurm_task=_slurm_task())
        # Every trial starts from the same seed, so trials differ by their hyperparameters, not by luck.
        spec = TrainSpec(architecture=architecture, hyperparams=hyperparams, seed=seed, precision=precision,
                         weights=weights)
        hooks = _TrialHooks(trial, folds=len(set(data.folds)), epochs=hyperparams.epochs,
                            checkpoint_dir=checkpoint_dir, params=params, precision=precision, device=device)
        started = time.perf_counter()
        try:
            result = fit(spec, data, device=device, hooks=hooks)
            hooks.still_ours()  # paused after its last epoch, the worker may have lost the trial to a retry
            _record_history(trial, result.history, started)
            records.record_validation(trial, result.validation.metrics, class_names=data.class_names,
                                      calibration=result.calibration.as_dict())
            _upload_artifacts(trial, artifact_store, result, architecture=architecture, data=data)
        except optuna.TrialPruned:
            _record_history(trial, hooks.history, started)
            _upload_history(trial, artifact_store, hooks.history, architecture=architecture)
            if hooks.checkpoint is not None:
                hooks.checkpoint.unlink(missing_ok=True)
            raise
        except Exception as error:
            records.record_failure(trial, error)
            _record_history(trial, hooks.history, started)
            # A refused checkpoint is not ours to delete.
            if hooks.checkpoint is not None and not isinstance(error, loop.CheckpointMismatch):
                hooks.checkpoint.unlink(missing_ok=True)
            raise
        hooks.checkpoint.unlink(missing_ok=True)
        return result.value

    def objective_or_taken_over(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except optuna.exceptions.UpdateFinishedTrialError as error:
            # Another worker failed this trial (its heartbeat went stale) between our checks.
            raise TrialTakenOver(f"trial {trial.number} was finished by another worker") from error

    return objective_or_taken_over


def _upload_artifacts(trial, artifact_store, result: FitResult, *, architecture: str, data: TrainingData) -> None:
    """Upload the trial's history, curves, validation confusion matrix and ``model.pt``."""
    with tempfile.TemporaryDirectory(prefix="spheroid-hpo-trial-") as scratch:
        scratch = Path(scratch)
        _upload_history(trial, artifact_store, result.history, architecture=architecture)
        confusion = plot_confusion(
            result.validation.metrics.confusion, data.class_names, scratch / "confusion.png",
            title=f"{architecture} trial {trial.number}: validation confusion matrix",
        )
        upload_artifact(artifact_store=artifact_store, file_path=str(confusion), study_or_trial=trial)
        weights_file = save_model(scratch / MODEL_FILE, result.model, result.info)
        artifact_id = upload_artifact(
            artifact_store=artifact_store, file_path=str(weights_file), study_or_trial=trial,
            mimetype="application/octet-stream",
        )
        records.record_model_artifact(trial, artifact_id)


def _record_history(trial: optuna.Trial, history: Sequence[loop.EpochStats], started: float) -> None:
    trained = [record.images_per_second for record in history if record.images_per_second > 0]
    records.record_run(
        trial, wall_time_seconds=round(time.perf_counter() - started, 3), epochs_trained=len(history),
        epochs_restored=sum(record.restored for record in history),
        val_macro_f1_last=history[-1].val_macro_f1 if history else None,
        images_per_second=round(sum(trained) / len(trained), 1) if trained else None,
    )


def _upload_history(trial, artifact_store, history, *, architecture: str) -> None:
    """Upload the per-epoch history as CSV and as the paper's loss/accuracy curves."""
    if not history:
        return
    with tempfile.TemporaryDirectory(prefix="spheroid-hpo-trial-") as folder:
        folder = Path(folder)
        rows = [record.as_dict() for record in history]
        table = folder / records.HISTORY_ARTIFACT
        with open(table, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        curves = plot_curves(rows, folder / "curves.png", title=f"{architecture} trial {trial.number}")
        for path in (table, curves):
            upload_artifact(artifact_store=artifact_store, file_path=str(path), study_or_trial=trial)
