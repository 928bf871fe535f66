"""Calibrated probabilities: one temperature fitted on the validation split, and how well it fits.

A network trained with cross-entropy is usually overconfident: of the images it
calls 95 % sure, fewer than 95 % are right. Temperature scaling (Guo et al.,
"On Calibration of Modern Neural Networks", ICML 2017) divides the logits by one
number T fitted on the validation split by minimising the negative
log-likelihood. T never changes the predicted class, only how sure it claims to
be. The expected calibration error (ECE, 15 equal-width confidence bins) measures
the gap between claimed confidence and accuracy, before and after.

The same validation pass also picks the threshold above which ``predict --tta``
flags an image ``uncertain``: the 95th percentile of the TTA predictive entropy
of the validation images the model classifies correctly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spheroid_hpo.training import inference
from spheroid_hpo.training.tta import tta_probabilities

__all__ = [
    "ECE_BINS", "Calibration", "calibrate", "expected_calibration_error", "fit_temperature",
    "negative_log_likelihood", "plot_reliability", "reliability_bins", "score_calibration",
]

ECE_BINS = 15
UNCERTAIN_QUANTILE = 0.95
_T_RANGE = (0.05, 20.0)  # a temperature outside this range means a broken fit, not calibration


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` against ``labels``."""
    return F.cross_entropy(logits.double().cpu() / temperature, labels.cpu()).item()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 that minimises the NLL of ``softmax(logits / T)``; 1.0 when it cannot help.

    Optimised over log T (so T stays positive) with L-BFGS in float64, from T = 1.
    """
    logits, labels = logits.detach().double().cpu(), labels.cpu()
    if len(labels) == 0 or not torch.isfinite(logits).all():
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp().clamp(*_T_RANGE))
    if not math.isfinite(temperature):
        return 1.0
    # Never return a temperature that fits worse than none (a flat or degenerate optimum).
    if negative_log_likelihood(logits, labels, temperature) > negative_log_likelihood(logits, labels, 1.0):
        return 1.0
    return temperature


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = ECE_BINS):
    """Per equal-width confidence bin: (mean confidence, accuracy, count); empty bins have count 0."""
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 joins the first bin.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    safe = np.maximum(counts, 1)
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / safe
    accuracy = np.bincount(index, weights=correct, minlength=bins) / safe
    return mean_confidence, accuracy, counts


def expected_calibration_error(probabilities, labels, *, bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over ``bins`` equal-width confidence bins."""
    confidence, accuracy, counts = reliability_bins(np.asarray(probabilities), np.asarray(labels), bins=bins)
    total = counts.sum()
    return float((counts * np.abs(accuracy - confidence)).sum() / total) if total else 0.0


@dataclass(frozen=True)
class Calibration:
    """The fitted temperature, the TTA uncertainty threshold, and NLL/ECE before and after per split."""

    temperature: float
    uncertain_entropy: float | None
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> nll/ece before/after
    reliability: dict[str, tuple] = field(default_factory=dict, repr=False)  # split -> (raw, calibrated) bins

    def as_dict(self) -> dict:
        """The calibration as recorded on a trial and in metrics.json."""
        return {
            "temperature": self.temperature, "ece_bins": ECE_BINS,
            "uncertain_entropy": self.uncertain_entropy, **self.scores,
        }


def score_calibration(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> tuple[dict, tuple]:
    """NLL and ECE of ``logits`` before and after ``temperature``, and the reliability bins of both."""
    logits, labels = logits.detach().double().cpu(), labels.cpu()
    raw = torch.softmax(logits, dim=1).numpy()
    calibrated = torch.softmax(logits / temperature, dim=1).numpy()
    scores = {
        "nll_before": negative_log_likelihood(logits, labels),
        "nll_after": negative_log_likelihood(logits, labels, temperature),
        "ece_before": expected_calibration_error(raw, labels.numpy()),
        "ece_after": expected_calibration_error(calibrated, labels.numpy()),
    }
    return scores, (reliability_bins(raw, labels.numpy()), reliability_bins(calibrated, labels.numpy()))


def calibrate(
    model: nn.Module,
    *,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    mean: Sequence[float] = inference.IMAGENET_MEAN,
    std: Sequence[float] = inference.IMAGENET_STD,
    test_images: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
) -> Calibration:
    """Fit the temperature and the uncertainty threshold on validation; score validation (and test).

    Logits are computed in fp32, as ``predict`` and the exports compute them.
    """
    def logits_of(images: torch.Tensor) -> torch.Tensor:
        return inference.predict_logits(model, images, mean=mean, std=std).cpu()

    val_logits = logits_of(val_images)
    temperature = fit_temperature(val_logits, val_labels)
    splits = {"val": (val_logits, val_labels.cpu())}
    if test_images is not None and test_labels is not None and len(test_labels):
        splits["test"] = (logits_of(test_images), test_labels.cpu())
    scores, reliability = {}, {}
    for split, (logits, labels) in splits.items():
        scores[split], reliability[split] = score_calibration(logits, labels, temperature)

    tta = tta_probabilities(logits_of, val_images, temperature=temperature)
    right = tta.probabilities.argmax(dim=1) == val_labels.cpu()
    uncertain = float(torch.quantile(tta.entropy[right], UNCERTAIN_QUANTILE)) if right.any() else None
    return Calibration(temperature=temperature, uncertain_entropy=uncertain, scores=scores, reliability=reliability)


def plot_reliability(calibration: Calibration, path: Path, *, title: str = "") -> Path:
    """Reliability diagram per split: accuracy against confidence, raw softmax and calibrated."""
    from matplotlib.figure import Figure

    from spheroid_hpo.training.figures import save_figure

    splits = list(calibration.reliability)
    fig = Figure(figsize=(4.5 * len(splits), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(splits)))
    for ax, split in zip(axes, splits):
        scores = calibration.scores[split]
        for (confidence, accuracy, counts), label, marker in zip(
            calibration.reliability[split],
            (f"softmax (ECE {scores['ece_before']:.3f})",
             f"T = {calibration.temperature:.2f} (ECE {scores['ece_after']:.3f})"),
            ("o", "s"),
        ):
            used = counts > 0
            ax.plot(confidence[used], accuracy[used], marker=marker, label=label)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title({"val": "validation", "test": "test"}.get(split, split))
        ax.legend(loc="upper left", fontsize="small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=150)
