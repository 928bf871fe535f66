"""A trial's saved model, scored once on the test split that tuning never saw."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from spheroid_hpo.data import SplitTensors
from spheroid_hpo.errors import InputError
from spheroid_hpo.training import inference
from spheroid_hpo.training.calibration import Calibration, score_calibration
from spheroid_hpo.training.device import resolve_precision
from spheroid_hpo.training.metrics import ClassificationMetrics, classification_metrics
from spheroid_hpo.training.saved_model import load_model
from spheroid_hpo.training.tta import tta_probabilities


@dataclass(frozen=True, eq=False)
class TestEvaluation:
    """One model's predictions on the test split and their scores."""

    architecture: str
    trial_number: int
    metrics: ClassificationMetrics
    y_true: np.ndarray
    y_pred: np.ndarray
    paths: tuple[str, ...]
    # Test-time augmentation (8 dihedral views) and calibration on the test split (issue 14).
    tta_metrics: ClassificationMetrics | None = None
    calibration: Calibration | None = field(default=None, repr=False)


def evaluate_on_test(
    model_path: Path,
    *,
    architecture: str,
    trial_number: int,
    test: SplitTensors,
    class_names: tuple[str, ...],
    precision: str,
    device: torch.device,
) -> TestEvaluation:
    """Score the model at ``model_path`` on ``test`` with the study's precision on ``device``."""
    model, info = load_model(model_path, device=device)
    if tuple(info.class_names) != tuple(class_names):
        raise InputError(
            f"the model of trial {trial_number} ({architecture}) predicts classes {list(info.class_names)}, "
            f"but the study's data has {list(class_names)}; pass --data with the folder the study was tuned on"
        )
    if info.image_size != test.images.shape[-1]:
        raise InputError(
            f"the model of trial {trial_number} expects {info.image_size} px images but the study's data was "
            f"decoded at {test.images.shape[-1]} px; the study records are inconsistent, rerun the study"
        )
    logits = inference.predict_logits(
        model, test.images.to(device), mean=info.mean, std=info.std,
        autocast_dtype=resolve_precision(precision, device, model=model),
    )
    y_pred = logits.argmax(dim=1).cpu().numpy()
    y_true = test.labels.cpu().numpy()

    def fp32_logits(images: torch.Tensor) -> torch.Tensor:  # as predict and the exports compute them
        return inference.predict_logits(model, images.to(device), mean=info.mean, std=info.std).cpu()

    scores, bins = score_calibration(fp32_logits(test.images), test.labels, info.temperature)
    tta = tta_probabilities(fp32_logits, test.images, temperature=info.temperature)
    return TestEvaluation(
        architecture=architecture,
        trial_number=trial_number,
        metrics=classification_metrics(y_true, y_pred, num_classes=len(class_names)),
        y_true=y_true,
        y_pred=y_pred,
        paths=test.paths,
        tta_metrics=classification_metrics(y_true, tta.probabilities.argmax(dim=1).numpy(),
                                           num_classes=len(class_names)),
        calibration=Calibration(temperature=info.temperature, uncertain_entropy=info.uncertain_entropy,
                                scores={"test": scores}, reliability={"test": bins}),
    )
