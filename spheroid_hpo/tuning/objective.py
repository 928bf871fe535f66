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
from spheroid_hpo.training import inference, loop
from spheroid_hpo.training.calibration import calibrate
from spheroid_hpo.training.device import resolve_precision, resolved_precision, seed_everything
from spheroid_hpo.training.figures import plot_confusion, plot_curves
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.models import count_parameters, create_model
from spheroid_hpo.training.saved_model import MODEL_FILE, ModelInfo, save_model
from spheroid_hpo.tuning import records
from spheroid_hpo.tuning.search_space import fixed_values, suggest_params
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


def build_objective(
    *,
    architecture: str,
    data: TrainingData,
    search_space: Sequence[ParamSpec],
    device: torch.device,
    artifact_store,
    checkpoint_dir: Path,
    precision: str = "auto",
    weights: str = "none",
    seed: int = 0,
) -> Callable[[optuna.Trial], float]:
    """The function ``study.optimize`` calls for each trial of ``architecture``."""
    num_classes = len(data.class_names)

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, search_space, architecture=architecture)
        # Optuna records only sampled values; the report shows what the trial trained with.
        trial.set_user_attr(records.FIXED_VALUES, fixed_values(search_space, architecture=architecture))
        owner = records.checkpoint_owner(_frozen(trial))
        hyperparams = Hyperparams.from_params(params)
        started = time.perf_counter()
        history: list[loop.EpochStats] = []
        fold_scores: list[float] = []

        def still_ours() -> None:
            # A worker paused past its heartbeat finds its trial failed and retried by another
            # worker, which resumes from this checkpoint: stop before overwriting it.
            if _taken_over(trial):
                raise TrialTakenOver(f"trial {trial.number} was taken over by another worker")

        def on_epoch(stats: loop.EpochStats) -> None:
            still_ours()
            history.append(stats)
            if data.folds:
                return  # cross-validated trials report once per fold, below
            trial.report(stats.val_macro_f1, stats.epoch)
            # After the last epoch there is nothing left to save: the trial completes, and its
            # value tells the sampler more than a pruned state would.
            if stats.epoch < hyperparams.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {stats.epoch} at val macro-F1 {stats.val_macro_f1:.3f}")

        def record_failure(error: Exception, checkpoint: Path) -> None:
            trial.set_user_attr(records.FAIL_REASON, f"{error.__class__.__name__}: {error}"[:1000])
            _record_history(trial, history, started)
            if not isinstance(error, loop.CheckpointMismatch):  # a refused checkpoint is not ours to delete
                checkpoint.unlink(missing_ok=True)

        trial.set_user_attr(records.DEVICE, str(device))
        # CPU results depend on the thread count (reduction order); reproduce needs it.
        trial.set_user_attr(records.TORCH_THREADS, torch.get_num_threads())
        # Which machine (or container) ran it: a retried trial names the worker that took it over.
        trial.set_user_attr(records.HOST, socket.gethostname())
        if (task := _slurm_task()) is not None:
            trial.set_user_attr(records.SLURM_TASK, task)
        for fold, (train, val) in enumerate(data.runs(), start=1):
            history.clear()
            checkpoint = Path(checkpoint_dir) / (f"trial-{owner}-fold{fold}.pt" if data.folds else f"trial-{owner}.pt")
            # Which study (name and creation id, in the folder name), trial, fold and point the
            # checkpoint belongs to: another study's checkpoint in a shared folder is refused, never resumed.
            tag = {"study": Path(checkpoint_dir).name, "trial": owner, "fold": fold, "params": dict(params)}
            # Every trial starts from the same seed, so trials differ by their hyperparameters, not by luck.
            seed_everything(seed)
            try:
                model = create_model(
                    architecture, num_classes=num_classes, weights=weights, bn_momentum=hyperparams.bn_momentum
                ).to(device, memory_format=torch.channels_last)
                trial.set_user_attr(records.PARAMETER_COUNT, count_parameters(model))
                trial.set_user_attr(records.PRECISION, resolved_precision(precision, device, model=model))
                loop.train(
                    model,
                    train_images=train.images, train_labels=train.labels,
                    val_images=val.images, val_labels=val.labels,
                    num_classes=num_classes, hyperparams=hyperparams,
                    seed=seed, precision=precision, on_epoch=on_epoch, checkpoint_path=checkpoint,
                    checkpoint_tag=tag, checkpoint_guard=still_ours,
                )
                if data.folds:
                    still_ours()
                    fold_scores.append(history[-1].val_macro_f1)
                    trial.set_user_attr(records.CV_SCORES, list(fold_scores))
                    checkpoint.unlink(missing_ok=True)
                    trial.report(statistics.fmean(fold_scores), fold)
                    if fold <= max(data.folds) and trial.should_prune():  # never after the last fold
                        raise optuna.TrialPruned(
                            f"pruned after fold {fold} at mean val macro-F1 {statistics.fmean(fold_scores):.3f}"
                        )
            except optuna.TrialPruned:
                _record_history(trial, history, started)
                _upload_history(trial, artifact_store, history, architecture=architecture)
                checkpoint.unlink(missing_ok=True)
                raise
            except Exception as error:
                record_failure(error, checkpoint)
                raise

        try:
            still_ours()  # paused after its last epoch, the worker may have lost the trial to a retry
            _, val_metrics = inference.evaluate(
                model, val.images, val.labels, num_classes=num_classes,
                autocast_dtype=resolve_precision(precision, device, model=model),
            )
            _record_history(trial, history, started)
            trial.set_user_attr(records.VAL_F1_PER_CLASS, [round(f, 6) for f in val_metrics.f1])
            trial.set_user_attr(records.VAL_ACCURACY, val_metrics.accuracy)
            trial.set_user_attr(records.CLASS_NAMES, list(data.class_names))
            # Under cross-validation ``val`` is the last fold's validation part, which this model never
            # trained on; most of the manifest's validation split was its training data.
            calibration = calibrate(model, val_images=val.images, val_labels=val.labels)
            trial.set_user_attr(records.CALIBRATION, calibration.as_dict())
            _upload_artifacts(trial, artifact_store, history, model, val_metrics, calibration, hyperparams=hyperparams,
                              architecture=architecture, data=data)
        except Exception as error:
            record_failure(error, checkpoint)
            raise
        checkpoint.unlink(missing_ok=True)
        return statistics.fmean(fold_scores) if data.folds else history[-1].val_macro_f1

    def objective_or_taken_over(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except optuna.exceptions.UpdateFinishedTrialError as error:
            # Another worker failed this trial (its heartbeat went stale) between our checks.
            raise TrialTakenOver(f"trial {trial.number} was finished by another worker") from error

    return objective_or_taken_over


def _upload_artifacts(trial, artifact_store, history, model, val_metrics, calibration, *, hyperparams: Hyperparams,
                      architecture: str, data: TrainingData) -> None:
    """Upload the trial's history, curves, validation confusion matrix and ``model.pt``."""
    with tempfile.TemporaryDirectory(prefix="spheroid-hpo-trial-") as scratch:
        scratch = Path(scratch)
        _upload_history(trial, artifact_store, history, architecture=architecture)
        confusion = plot_confusion(
            val_metrics.confusion, data.class_names, scratch / "confusion.png",
            title=f"{architecture} trial {trial.number}: validation confusion matrix",
        )
        upload_artifact(artifact_store=artifact_store, file_path=str(confusion), study_or_trial=trial)
        info = ModelInfo(
            architecture=architecture, class_names=data.class_names, image_size=data.image_size,
            mean=inference.IMAGENET_MEAN, std=inference.IMAGENET_STD,
            bn_momentum=hyperparams.bn_momentum,
            temperature=calibration.temperature, uncertain_entropy=calibration.uncertain_entropy,
        )
        weights_file = save_model(scratch / MODEL_FILE, model, info)
        artifact_id = upload_artifact(
            artifact_store=artifact_store, file_path=str(weights_file), study_or_trial=trial,
            mimetype="application/octet-stream",
        )
        trial.set_user_attr(records.MODEL_ARTIFACT_ID, artifact_id)


def _record_history(trial: optuna.Trial, history: Sequence[loop.EpochStats], started: float) -> None:
    trial.set_user_attr(records.WALL_TIME_SECONDS, round(time.perf_counter() - started, 3))
    trial.set_user_attr(records.EPOCHS_TRAINED, len(history))
    trial.set_user_attr(records.EPOCHS_RESTORED, sum(record.restored for record in history))
    if history:
        trial.set_user_attr(records.VAL_MACRO_F1_LAST, history[-1].val_macro_f1)
        trained = [record.images_per_second for record in history if record.images_per_second > 0]
        if trained:
            trial.set_user_attr(records.TRAIN_IMAGES_PER_SECOND, round(sum(trained) / len(trained), 1))


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
