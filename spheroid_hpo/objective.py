"""Where a trial meets a training run: suggest, train, report and prune, store results.

A trial trains on the train split and is judged on the validation split only; the
test split never reaches this module, so nobody can pick a configuration by its
test score. The trial's value is the validation macro-F1 of its last epoch.
"""

from __future__ import annotations

import csv
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.artifacts import upload_artifact
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from spheroid_hpo import engine
from spheroid_hpo.calibration import calibrate
from spheroid_hpo.config import ParamSpec
from spheroid_hpo.data import SplitTensors
from spheroid_hpo.figures import plot_confusion, plot_curves
from spheroid_hpo.models import count_parameters, create_model
from spheroid_hpo.saved_model import ModelInfo, save_model
from spheroid_hpo.search_space import suggest_params

# User attribute a re-queued interrupted trial carries: the trial whose checkpoint it resumes.
RESUMES_TRIAL_ATTR = "resumes_trial"
FAIL_REASON_ATTR = "fail_reason"
MODEL_ARTIFACT = "model.pt"


@dataclass(frozen=True)
class TrialData:
    """What every trial of a worker trains and validates on, decoded once per worker."""

    train: SplitTensors
    val: SplitTensors
    class_names: tuple[str, ...]
    image_size: int


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
    resumed = trial.user_attrs.get(RESUMES_TRIAL_ATTR)
    if resumed is not None:
        return int(resumed)
    retried, _ = retry_links(trial)
    return trial.number if retried is None else retried


def _frozen(trial: optuna.Trial) -> FrozenTrial:
    # The retry link lives in system attributes, which only the frozen trial exposes.
    running = trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return next(t for t in running if t.number == trial.number)


def build_objective(
    *,
    architecture: str,
    data: TrialData,
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
        params = suggest_params(trial, search_space)
        checkpoint = Path(checkpoint_dir) / f"trial-{checkpoint_owner(_frozen(trial))}.pt"
        started = time.perf_counter()
        history: list[engine.EpochStats] = []

        def on_epoch(stats: engine.EpochStats) -> None:
            history.append(stats)
            trial.report(stats.val_macro_f1, stats.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {stats.epoch} at val macro-F1 {stats.val_macro_f1:.3f}")

        # Every trial starts from the same seed, so trials differ by their hyperparameters, not by luck.
        engine.seed_everything(seed)
        model = create_model(
            architecture, num_classes=num_classes, weights=weights, bn_momentum=params.get("bn_momentum")
        ).to(device, memory_format=torch.channels_last)
        trial.set_user_attr("device", str(device))
        # Which machine (or container) ran it: a retried trial names the worker that took it over.
        trial.set_user_attr("host", socket.gethostname())
        # CPU results depend on the thread count (reduction order); reproduce needs it.
        trial.set_user_attr("torch_threads", torch.get_num_threads())
        trial.set_user_attr("parameter_count", count_parameters(model))
        try:
            engine.train(
                model,
                train_images=data.train.images, train_labels=data.train.labels,
                val_images=data.val.images, val_labels=data.val.labels,
                num_classes=num_classes, epochs=int(params["epochs"]), lr=float(params["lr"]),
                batch_size=int(params["batch_size"]), rotation=float(params["rotation"]),
                seed=seed, precision=precision, on_epoch=on_epoch, checkpoint_path=checkpoint,
            )
        except optuna.TrialPruned:
            _record_history(trial, history, started)
            _upload_history(trial, artifact_store, history, architecture=architecture)
            checkpoint.unlink(missing_ok=True)
            raise
        except Exception as error:
            trial.set_user_attr(FAIL_REASON_ATTR, f"{error.__class__.__name__}: {error}"[:1000])
            _record_history(trial, history, started)
            checkpoint.unlink(missing_ok=True)
            raise

        _, val_metrics = engine.evaluate(
            model, data.val.images, data.val.labels, num_classes=num_classes,
            autocast_dtype=engine.resolve_precision(precision, device, model=model),
        )
        _record_history(trial, history, started)
        trial.set_user_attr("val_f1_per_class", [round(f, 6) for f in val_metrics.f1])
        trial.set_user_attr("val_accuracy", val_metrics.accuracy)
        trial.set_user_attr("class_names", list(data.class_names))
        calibration = calibrate(model, val_images=data.val.images, val_labels=data.val.labels)
        trial.set_user_attr("calibration", calibration.as_dict())
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
                mean=engine.IMAGENET_MEAN, std=engine.IMAGENET_STD, bn_momentum=params.get("bn_momentum"),
                temperature=calibration.temperature, uncertain_entropy=calibration.uncertain_entropy,
            )
            weights_file = save_model(scratch / MODEL_ARTIFACT, model, info)
            artifact_id = upload_artifact(
                artifact_store=artifact_store, file_path=str(weights_file), study_or_trial=trial,
                mimetype="application/octet-stream",
            )
            trial.set_user_attr("model_artifact_id", artifact_id)
        checkpoint.unlink(missing_ok=True)
        return history[-1].val_macro_f1

    return objective


def _record_history(trial: optuna.Trial, history: Sequence[engine.EpochStats], started: float) -> None:
    trial.set_user_attr("wall_time_seconds", round(time.perf_counter() - started, 3))
    trial.set_user_attr("epochs_trained", len(history))
    trial.set_user_attr("epochs_restored", sum(record.restored for record in history))
    if history:
        trial.set_user_attr("val_macro_f1_last", history[-1].val_macro_f1)
        trained = [record.images_per_second for record in history if record.images_per_second > 0]
        if trained:
            trial.set_user_attr("train_images_per_second", round(sum(trained) / len(trained), 1))


def _upload_history(trial, artifact_store, history, *, architecture: str) -> None:
    """Upload the per-epoch history as CSV and as the paper's loss/accuracy curves."""
    if not history:
        return
    with tempfile.TemporaryDirectory(prefix="spheroid-hpo-trial-") as folder:
        folder = Path(folder)
        rows = [record.as_dict() for record in history]
        table = folder / "history.csv"
        with open(table, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        curves = plot_curves(rows, folder / "curves.png", title=f"{architecture} trial {trial.number}")
        for path in (table, curves):
            upload_artifact(artifact_store=artifact_store, file_path=str(path), study_or_trial=trial)
