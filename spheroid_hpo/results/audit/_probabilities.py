"""Out-of-sample class probabilities of every train and validation image, by K-fold retraining.

Each image's probabilities come from a model that never trained on it: train+val is cut
into K folds with the project's fold rule (stratified; the manifest's groups and every set
of duplicates in one fold, the same rule as ``[data] cv_folds``), and the configuration is
retrained once per fold on the others with the recipe every command that trains uses
(``training.recipe.fit``, the held-out fold as its validation split). Each held-out image's
probabilities are the fold model's softmax at the temperature the recipe fitted on that fold,
averaged over the 8 dihedral views (``training.tta``): steadier than one view, so a correctly
labelled image the model is unsure of is less often flagged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spheroid_hpo.data import TrainingData, training_data
from spheroid_hpo.errors import InputError
from spheroid_hpo.results.audit._source import AuditPlan
from spheroid_hpo.training import inference
from spheroid_hpo.training.recipe import TrainSpec, fit
from spheroid_hpo.training.tta import tta_probabilities

Log = Callable[[str], None]


@dataclass(frozen=True)
class HeldOut:
    """Every train and validation image with its given label and out-of-sample probabilities, row for row."""

    paths: tuple[str, ...]  # relative to the data folder, as in the manifest
    splits: tuple[str, ...]  # "train" or "val": the manifest's split of each image
    labels: np.ndarray  # (N,) int, the given labels
    probabilities: np.ndarray  # (N, C) float, of the model that held the image out (8 views, its temperature)
    fold_of: np.ndarray  # (N,) int, the fold each image was held out in
    class_names: tuple[str, ...]
    images: torch.Tensor  # (N, 3, S, S) float16 in [0, 1], for thumbnails
    folds: int
    seconds: float


def held_out_probabilities(plan: AuditPlan, *, folds: int, manifest_path: Path, device: torch.device,
                           log: Log) -> HeldOut:
    """Retrain ``plan``'s configuration ``folds`` times and predict each fold's held-out images."""
    started = time.perf_counter()
    log(f"loading the train and validation splits of {plan.folder}")
    dataset = plan.load_train_val(manifest_path).to(device)
    try:
        data = training_data(dataset, manifest=manifest_path, cv_folds=folds, split_seed=plan.split_seed)
    except InputError as error:
        raise InputError(f"cannot cut train+val into {folds} folds: {error}; pass a smaller --folds") from None
    paths = dataset.train.paths + dataset.val.paths
    splits = ("train",) * len(dataset.train) + ("val",) * len(dataset.val)
    fold_of = np.asarray(data.folds)
    if len(set(data.folds)) < folds:
        raise InputError(f"--folds {folds} leaves a fold empty: train+val holds {len(paths)} images in "
                         f"{len(set(data.folds))} groups; pass a smaller --folds")
    num_classes = len(dataset.class_names)
    position = {path: index for index, path in enumerate(paths)}
    probabilities = np.full((len(paths), num_classes), np.nan)
    # Every fold starts from the configuration's seed, as each fold of a cross-validated trial does.
    spec = TrainSpec(architecture=plan.architecture, hyperparams=plan.hyperparams, seed=plan.seed,
                     precision=plan.precision, weights=plan.weights)
    for fold, (train, held_out) in enumerate(data.runs()):
        fold_started = time.perf_counter()
        log(f"fold {fold + 1}/{folds}: training {plan.architecture} on {len(train)} images, predicting "
            f"{len(held_out)} held-out images ({plan.hyperparams.epochs} epochs)")
        fitted = fit(spec, TrainingData(train=train, val=held_out, class_names=dataset.class_names,
                                        image_size=dataset.image_size), device=device)
        rows = [position[path] for path in held_out.paths]
        probabilities[rows] = _probabilities(fitted, held_out.images).numpy()
        accuracy = float((torch.from_numpy(probabilities[rows]).argmax(1) == held_out.labels.cpu()).float().mean())
        log(f"fold {fold + 1}/{folds}: held-out accuracy against the given labels {accuracy:.3f} "
            f"({time.perf_counter() - fold_started:.0f} s)")
    return HeldOut(
        paths=paths, splits=splits,
        labels=torch.cat([dataset.train.labels, dataset.val.labels]).cpu().numpy(),
        probabilities=probabilities, fold_of=fold_of, class_names=dataset.class_names,
        images=torch.cat([dataset.train.images, dataset.val.images]).cpu(), folds=folds,
        seconds=time.perf_counter() - started,
    )


def _probabilities(fitted, images: torch.Tensor) -> torch.Tensor:
    """(N, C) float64 on the CPU: softmax at the fold's fitted temperature, averaged over the 8 dihedral views."""
    def logits_of(view: torch.Tensor) -> torch.Tensor:
        return inference.predict_logits(fitted.model, view, autocast_dtype=fitted.autocast_dtype)

    return tta_probabilities(logits_of, images, temperature=fitted.calibration.temperature).probabilities.double()
