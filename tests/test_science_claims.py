"""What the README and the report claim about the numbers, each recomputed here by hand.

Each test recomputes one claim (calibration error after scaling, test-time
augmentation, the uncertainty threshold, the paired comparison's sign, the
reproduction band, class weights) from its definition, with numpy or
scikit-learn, and is named in ``tests/mutations.txt`` with the one-line breakage
it catches.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from spheroid_hpo.results.best_file import MIN_BAND, SeedScores, Z
from spheroid_hpo.results.report._content import _repeats
from spheroid_hpo.results.report._repeats import RepeatedRuns, compare_architectures
from spheroid_hpo.training import loop
from spheroid_hpo.training.calibration import UNCERTAIN_QUANTILE, calibrate, fit_temperature, score_calibration
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.tta import tta_probabilities


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _entropy(probabilities: np.ndarray) -> np.ndarray:
    return -(probabilities * np.log(np.clip(probabilities, 1e-12, None))).sum(axis=1)


def _ece_by_hand(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s definition, one bin at a time: bin b holds confidences in (b/bins, (b+1)/bins]."""
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    total = 0.0
    for b in range(bins):
        inside = (confidence > b / bins) & (confidence <= (b + 1) / bins)
        if inside.any():
            total += inside.sum() / len(labels) * abs((predicted[inside] == labels[inside]).mean()
                                                      - confidence[inside].mean())
    return total


def _overconfident_logits(n: int = 400, k: int = 4, accuracy: float = 0.7, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    predicted = np.where(rng.random(n) > accuracy, (labels + rng.integers(1, k, n)) % k, labels)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), predicted] += 12.0
    return logits, labels


def test_ece_and_nll_after_are_those_of_the_temperature_scaled_probabilities():
    logits, labels = _overconfident_logits()
    temperature = fit_temperature(torch.tensor(logits), torch.tensor(labels))
    scores, (raw_bins, scaled_bins) = score_calibration(torch.tensor(logits), torch.tensor(labels), temperature)
    raw, scaled = _softmax(logits), _softmax(logits / temperature)
    assert scores["ece_before"] == pytest.approx(_ece_by_hand(raw, labels))
    assert scores["ece_after"] == pytest.approx(_ece_by_hand(scaled, labels))
    assert scores["nll_before"] == pytest.approx(log_loss(labels, raw, labels=range(4)))
    assert scores["nll_after"] == pytest.approx(log_loss(labels, scaled, labels=range(4)))
    # The claim the numbers carry: scaling an overconfident model lowers its calibration error.
    assert scores["ece_after"] < 0.5 * scores["ece_before"]
    # The reliability diagram's second curve is the scaled one: its mean confidence per image is the scaled one.
    for (confidence, _, counts), probabilities in ((raw_bins, raw), (scaled_bins, scaled)):
        assert (confidence * counts).sum() / counts.sum() == pytest.approx(probabilities.max(axis=1).mean())


def _dihedral_by_hand(images: np.ndarray) -> list[np.ndarray]:
    views = []
    for k in range(4):
        rotated = np.rot90(images, k, axes=(-2, -1))
        views += [rotated, rotated[..., ::-1]]
    return views


def test_tta_averages_the_probabilities_of_the_eight_views_not_their_logits():
    images = np.random.default_rng(0).normal(0, 3, (6, 1, 4, 4))
    temperature = 1.5

    def first_row(view: torch.Tensor) -> torch.Tensor:  # a "model" whose 4 logits are the view's top row
        return view[:, 0, 0, :]

    result = tta_probabilities(first_row, torch.tensor(images, dtype=torch.float32), temperature=temperature)
    per_view = np.stack([_softmax(view[:, 0, 0, :] / temperature) for view in _dihedral_by_hand(images)])
    expected = per_view.mean(axis=0)
    np.testing.assert_allclose(result.probabilities.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(result.entropy.numpy(), _entropy(expected), atol=1e-5)
    agreement = (per_view.argmax(axis=2) == expected.argmax(axis=1)).mean(axis=0)
    np.testing.assert_allclose(result.agreement.numpy(), agreement)
    # The test means something: averaging the logits would have given other probabilities.
    logits_mean = _softmax(np.mean([v[:, 0, 0, :] for v in _dihedral_by_hand(images)], axis=0) / temperature)
    assert np.abs(logits_mean - expected).max() > 0.05


class _PooledLinear(nn.Module):
    """Mean of each channel, then a linear layer: the same output for every rotation and flip of an image."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(-2, -1)))


def test_the_uncertainty_threshold_comes_from_the_correctly_classified_validation_images():
    torch.manual_seed(0)
    model = _PooledLinear()
    with torch.no_grad():
        model.linear.weight.mul_(8.0)
    images = torch.rand(60, 3, 8, 8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    with torch.no_grad():
        logits = model((images - 0.5) / 0.25).double().numpy()
    # The model is right on its 40 surest images and wrong on the 20 least sure ones, as real models tend to be.
    predicted, order = logits.argmax(axis=1), np.argsort(_entropy(_softmax(logits)))
    labels = predicted.copy()
    labels[order[40:]] = (predicted[order[40:]] + 1) % 4
    calibration = calibrate(model, val_images=images, val_labels=torch.tensor(labels), mean=mean, std=std)
    entropy = _entropy(_softmax(logits / calibration.temperature))
    right = predicted == labels
    assert calibration.uncertain_entropy == pytest.approx(np.quantile(entropy[right], UNCERTAIN_QUANTILE), abs=1e-4)
    # Taken from every validation image, the threshold would be another number.
    assert abs(np.quantile(entropy, UNCERTAIN_QUANTILE) - np.quantile(entropy[right], UNCERTAIN_QUANTILE)) > 1e-2


def test_the_paired_comparison_is_labelled_first_minus_second_with_the_sign_of_that_difference():
    better = (0.70, 0.62, 0.81, 0.66, 0.75)
    worse = tuple(x - 0.05 + 0.01 * i for i, x in enumerate(better))  # worse by 0.05 to 0.01
    runs = {name: RepeatedRuns(architecture=name, trial_number=0, seeds=tuple(range(5)), test_macro_f1=scores,
                               val_macro_f1=scores, histories=()) for name, scores in (("alpha", better),
                                                                                       ("beta", worse))}
    comparisons = compare_architectures(runs)
    blocks = _repeats(SimpleNamespace(repeats=runs, comparisons=tuple(comparisons)))
    (table,) = [block for block in blocks if getattr(block, "caption", "") == "Paired comparison of test macro-F1"]
    (row,) = table.rows
    label, mean = row[0], float(row[2])
    first, second = (name.strip() for name in label.split("−"))
    # The row reads "first − second", and its mean is that difference: positive here for alpha − beta.
    assert mean == pytest.approx(np.mean(runs[first].test_macro_f1) - np.mean(runs[second].test_macro_f1), abs=1e-3)
    assert (first, second) == ("alpha", "beta") and mean > 0


def test_the_reproduction_band_narrows_with_the_square_root_of_the_seeds():
    scores = SeedScores(per_seed=(0.50, 0.60, 0.70, 0.55, 0.65), original=0.6)
    sd = float(np.std(scores.per_seed, ddof=1))
    assert scores.sd == pytest.approx(sd)
    for n in (1, 2, 3, 4, 8, 16):
        assert scores.half_width(n) == pytest.approx(max(Z * sd * math.sqrt(2 / n), MIN_BAND))
    assert Z * sd * math.sqrt(2 / 16) > MIN_BAND  # the floor is not what the numbers above show
    assert scores.half_width(4) == pytest.approx(scores.half_width(1) / 2)  # four times the seeds, half the band


def test_balanced_class_weights_count_the_training_labels_only(monkeypatch):
    seen = []
    real = loop.F.cross_entropy

    def spy(logits, labels, *args, weight=None, **kwargs):
        seen.append(weight)
        return real(logits, labels, *args, weight=weight, **kwargs)

    monkeypatch.setattr(loop.F, "cross_entropy", spy)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    train_labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 4)
    val_labels = torch.tensor([1] * 10 + [2] * 2)  # another balance: counted with train, the weights would move
    loop.train(model, train_images=torch.rand(12, 3, 8, 8), train_labels=train_labels,
               val_images=torch.rand(12, 3, 8, 8), val_labels=val_labels, num_classes=3,
               hyperparams=Hyperparams(epochs=1, lr=1e-3, batch_size=4, rotation=0, class_weights="balanced"),
               seed=0, precision="fp32")
    expected = compute_class_weight("balanced", classes=np.arange(3), y=train_labels.numpy())
    weighted = [w for w in seen if w is not None]
    assert weighted and all(w.tolist() == pytest.approx(expected.tolist()) for w in weighted)
