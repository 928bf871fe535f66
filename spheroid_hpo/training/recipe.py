"""The one training recipe: a configuration and its data in, a trained, scored and calibrated model out.

Every command that trains calls ``fit``: a trial (``tuning/objective.py``), ``train``
(``training/run.py``), and through ``run_training`` ``export-best``, ``reproduce`` and
``report --repeats``; ``audit-labels`` calls it once per fold (``results/audit/_probabilities.py``).
So a retraining treats folds, class weights, seeding and calibration exactly as the trial
did. What differs between callers (reporting to a pruner, checkpoints, a trial being taken
over) comes in through ``FitHooks``.

With folds (``TrainingData.folds``) the model is trained once per fold, each from the
same seed; the value is the mean of the folds' last-epoch validation macro-F1, and
the returned model, its validation scores and its calibration are the last fold's
(its validation part is images that model never trained on).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spheroid_hpo.data import SplitTensors, TrainingData
from spheroid_hpo.errors import InputError
from spheroid_hpo.training import inference, loop
from spheroid_hpo.training.architectures import architecture_names
from spheroid_hpo.training.calibration import Calibration, calibrate
from spheroid_hpo.training.device import resolve_precision, seed_everything
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.loop import EpochStats
from spheroid_hpo.training.metrics import ClassificationMetrics
from spheroid_hpo.training.models import count_parameters, create_model
from spheroid_hpo.training.saved_model import ModelInfo
from spheroid_hpo.training.settings import TRAINING_DEFAULTS, TrainingSettings

__all__ = ["Checkpoint", "Evaluation", "FitHooks", "FitResult", "TrainSpec", "fit"]


@dataclass(frozen=True)
class TrainSpec:
    """What is trained and how: the architecture, its hyperparameters, the training seed, the
    precision and the starting weights (``none``, ``imagenet`` or a state-dict path)."""

    architecture: str
    hyperparams: Hyperparams
    seed: int = TRAINING_DEFAULTS.seed
    precision: str = TRAINING_DEFAULTS.precision
    weights: str = TRAINING_DEFAULTS.weights

    def __post_init__(self) -> None:
        if self.architecture not in architecture_names():
            raise InputError(f"unknown architecture {self.architecture!r}; choose one of: "
                             f"{', '.join(architecture_names())}")
        TrainingSettings(precision=self.precision, weights=self.weights, seed=self.seed)  # its checks, once


@dataclass(frozen=True)
class Checkpoint:
    """Where one fold's training state is saved after every epoch, and whose it is (``loop.train``)."""

    path: Path
    tag: dict
    guard: object = None  # called before each write; may raise to stop without writing


class FitHooks:
    """What a caller of ``fit`` adds to the recipe; each method does nothing unless overridden.

    Any of them may raise to stop training (a pruned trial, a trial taken over).
    """

    def fold_started(self, fold: int) -> Checkpoint | None:
        """Before fold ``fold`` (1-based; 1 without folds) trains: where to checkpoint it, or None."""
        return None

    def model_built(self, model: nn.Module) -> None:
        """After the fold's model is built, before it trains."""

    def epoch_end(self, fold: int, stats: EpochStats) -> None:
        """After each epoch of fold ``fold``, restored ones included."""

    def fold_end(self, fold: int, scores: tuple[float, ...]) -> None:
        """After fold ``fold`` trained; ``scores`` holds each fold's last-epoch validation macro-F1 so far."""


@dataclass(frozen=True)
class Evaluation:
    """One split scored by a trained model: mean cross-entropy and the classification metrics."""

    loss: float
    metrics: ClassificationMetrics

    def as_dict(self) -> dict:
        """Loss, accuracy, macro-F1, F1 per class and confusion, as metrics.json holds them."""
        return {"loss": self.loss, **self.metrics.to_dict()}


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` trained and measured (the last fold's model and scores under cross-validation)."""

    model: nn.Module
    info: ModelInfo  # what model.pt records beside the weights, temperature included
    history: tuple[EpochStats, ...]  # the last fold's epochs
    fold_scores: tuple[float, ...]  # each fold's last-epoch validation macro-F1 (one entry without folds)
    cross_validated: bool
    validation: Evaluation  # the model on its own validation images
    test: Evaluation | None  # the model on the test split, when one was given
    calibration: Calibration
    parameter_count: int
    autocast_dtype: torch.dtype | None

    @property
    def value(self) -> float:
        """What a trial's value is: the mean over folds, or the last epoch's validation macro-F1
        taken inside the loop."""
        return statistics.fmean(self.fold_scores) if self.cross_validated else self.history[-1].val_macro_f1


_NO_HOOKS = FitHooks()


def fit(spec: TrainSpec, data: TrainingData, *, device: torch.device, test: SplitTensors | None = None,
        hooks: FitHooks = _NO_HOOKS, progress: bool = False) -> FitResult:
    """Train ``spec`` on ``data`` (its folds, when it has them), then score and calibrate the model.

    The images must already be on ``device``. Each fold starts from ``spec.seed``, so runs
    differ by their configuration, not by luck. ``test`` is only scored, never trained or
    calibrated on.
    """
    num_classes = len(data.class_names)
    hyperparams = spec.hyperparams
    scores: list[float] = []
    for fold, (train, val) in enumerate(data.runs(), start=1):
        checkpoint = hooks.fold_started(fold)
        seed_everything(spec.seed)
        model = create_model(spec.architecture, num_classes=num_classes, weights=spec.weights,
                             bn_momentum=hyperparams.bn_momentum).to(device, memory_format=torch.channels_last)
        hooks.model_built(model)
        history = loop.train(
            model,
            train_images=train.images, train_labels=train.labels,
            val_images=val.images, val_labels=val.labels,
            num_classes=num_classes, hyperparams=hyperparams, seed=spec.seed, precision=spec.precision,
            on_epoch=lambda stats, fold=fold: hooks.epoch_end(fold, stats),
            checkpoint_path=checkpoint.path if checkpoint else None,
            checkpoint_tag=checkpoint.tag if checkpoint else None,
            checkpoint_guard=checkpoint.guard if checkpoint else None,
            progress=progress,
        )
        scores.append(history[-1].val_macro_f1)
        hooks.fold_end(fold, tuple(scores))

    autocast_dtype = resolve_precision(spec.precision, device, model=model)

    def evaluation(split: SplitTensors) -> Evaluation:
        loss, metrics = inference.evaluate(model, split.images, split.labels, num_classes=num_classes,
                                           autocast_dtype=autocast_dtype)
        return Evaluation(loss=loss, metrics=metrics)

    validation = evaluation(val)
    tested = evaluation(test) if test is not None else None
    # One temperature fitted on validation (under folds, the last fold's part, which this model
    # never trained on); test is only scored with it.
    calibration = calibrate(
        model, val_images=val.images, val_labels=val.labels,
        **({"test_images": test.images, "test_labels": test.labels} if test is not None else {}),
    )
    info = ModelInfo(
        architecture=spec.architecture, class_names=tuple(data.class_names), image_size=data.image_size,
        mean=inference.IMAGENET_MEAN, std=inference.IMAGENET_STD, bn_momentum=hyperparams.bn_momentum,
        temperature=calibration.temperature, uncertain_entropy=calibration.uncertain_entropy,
    )
    return FitResult(
        model=model, info=info, history=tuple(history), fold_scores=tuple(scores),
        cross_validated=bool(data.folds), validation=validation, test=tested, calibration=calibration,
        parameter_count=count_parameters(model), autocast_dtype=autocast_dtype,
    )
