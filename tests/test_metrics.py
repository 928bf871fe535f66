"""Numpy metrics against scikit-learn, including classes absent from y_true or y_pred."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from spheroid_hpo.errors import InputError
from spheroid_hpo.training.metrics import ClassificationMetrics, classification_metrics


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 7))
    size = int(rng.integers(1, 40))
    # Drawing from a random subset of labels makes absent classes (in truth, predictions or both) common.
    true_labels = rng.choice(num_classes, size=int(rng.integers(1, num_classes + 1)), replace=False)
    pred_labels = rng.choice(num_classes, size=int(rng.integers(1, num_classes + 1)), replace=False)
    y_true = rng.choice(true_labels, size=size)
    # Mostly-correct predictions, like a trained model, with random mistakes.
    y_pred = np.where(rng.random(size) < 0.6, y_true, rng.choice(pred_labels, size=size))
    return y_true, y_pred, num_classes


@pytest.mark.parametrize("seed", range(200))
def test_matches_scikit_learn(seed: int):
    y_true, y_pred, n = _random_case(seed)
    labels = list(range(n))
    got = classification_metrics(y_true, y_pred, num_classes=n)

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    np.testing.assert_allclose(got.precision, precision, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.recall, recall, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.f1, f1, rtol=0, atol=1e-12)
    assert got.support == tuple(support.tolist())
    expected_macro = f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    assert got.macro_f1 == pytest.approx(expected_macro, abs=1e-12)
    assert got.accuracy == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert got.confusion == tuple(map(tuple, confusion_matrix(y_true, y_pred, labels=labels).tolist()))


def test_cases_cover_absent_classes():
    # Guards the random generator above: it must exercise the zero-division paths.
    absent_true = absent_pred = 0
    for seed in range(200):
        y_true, y_pred, n = _random_case(seed)
        absent_true += len(set(range(n)) - set(y_true.tolist())) > 0
        absent_pred += len(set(range(n)) - set(y_pred.tolist())) > 0
    assert absent_true > 50 and absent_pred > 50


def test_hand_worked_example():
    # Class 2 never occurs and is never predicted; class 1 is never predicted.
    m = classification_metrics([0, 0, 1, 3], [0, 3, 0, 3], num_classes=4)
    assert m.confusion == ((1, 0, 0, 1), (1, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 1))
    assert m.precision == (0.5, 0.0, 0.0, 0.5)
    assert m.recall == (0.5, 0.0, 0.0, 1.0)
    assert m.f1 == pytest.approx((0.5, 0.0, 0.0, 2 / 3))
    assert m.support == (2, 1, 0, 1)
    assert m.macro_f1 == pytest.approx((0.5 + 2 / 3) / 4)
    assert m.accuracy == 0.5


def test_accepts_tensors_and_is_frozen_and_json_ready():
    m = classification_metrics(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), num_classes=2)
    assert isinstance(m, ClassificationMetrics)
    with pytest.raises(AttributeError):
        m.accuracy = 1.0  # type: ignore[misc]
    data = json.loads(json.dumps(m.to_dict()))
    assert data["confusion"] == [[1, 0], [1, 1]]
    assert data["support"] == [1, 2]
    assert data["accuracy"] == pytest.approx(2 / 3)
    assert set(data) == {"precision", "recall", "f1", "support", "macro_f1", "accuracy", "confusion"}


@pytest.mark.parametrize(
    ("y_true", "y_pred", "num_classes", "fragment"),
    [
        ([0, 1, 2], [0, 1], 3, "y_true has 3 labels but y_pred has 2"),
        ([0, 1, 4], [0, 1, 2], 4, "y_true contains label 4 outside 0..3"),
        ([0, 1, 2], [0, -1, 2], 3, "y_pred contains label -1 outside 0..2"),
        ([0.2, 0.8], [0, 1], 2, "y_true has dtype float64"),
        ([[0, 1]], [[0, 1]], 2, r"y_true has shape \(1, 2\)"),
        ([], [], 2, "empty"),
        ([0], [0], 0, "num_classes=0"),
    ],
)
def test_bad_input_raises_input_error(y_true, y_pred, num_classes, fragment):
    with pytest.raises(InputError, match=fragment):
        classification_metrics(y_true, y_pred, num_classes=num_classes)
