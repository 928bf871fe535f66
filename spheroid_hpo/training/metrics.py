"""Classification metrics computed from a confusion matrix with numpy.

The numbers match scikit-learn's ``precision_recall_fscore_support``,
``f1_score(average="macro")``, ``accuracy_score`` and ``confusion_matrix`` called
with ``labels=range(num_classes)`` and ``zero_division=0``: a class that is never
predicted has precision 0, a class that never occurs has recall 0, and the macro
average runs over all ``num_classes`` classes, present or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spheroid_hpo.errors import InputError

__all__ = ["ClassificationMetrics", "classification_metrics"]


@dataclass(frozen=True)
class ClassificationMetrics:
    """Per-class and summary scores of one set of predictions.

    ``precision``, ``recall``, ``f1`` and ``support`` hold one entry per class,
    indexed by label. ``confusion[i][j]`` counts samples of true class ``i``
    predicted as class ``j``.
    """

    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    support: tuple[int, ...]
    macro_f1: float
    accuracy: float
    confusion: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (lists for the per-class values)."""
        return {
            "precision": list(self.precision),
            "recall": list(self.recall),
            "f1": list(self.f1),
            "support": list(self.support),
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "confusion": [list(row) for row in self.confusion],
        }


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], *, num_classes: int) -> ClassificationMetrics:
    """Score predicted labels ``y_pred`` against true labels ``y_true``.

    Labels are integers in ``[0, num_classes)``; any array-like works (lists,
    numpy arrays, CPU tensors). Undefined ratios count as 0.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise InputError(f"num_classes={num_classes!r} is invalid; pass the number of classes as an integer >= 1")
    true = _labels("y_true", y_true, num_classes)
    pred = _labels("y_pred", y_pred, num_classes)
    if true.size != pred.size:
        raise InputError(f"y_true has {true.size} labels but y_pred has {pred.size}; pass one prediction per sample")
    if true.size == 0:
        raise InputError("y_true and y_pred are empty; pass at least one sample to score")

    confusion = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    # 2tp / (2tp + fp + fn) equals the harmonic mean of precision and recall
    # and is what scikit-learn computes, so ill-defined cases agree exactly.
    f1 = _ratio(2.0 * tp, support + predicted)
    return ClassificationMetrics(
        precision=tuple(precision.tolist()),
        recall=tuple(recall.tolist()),
        f1=tuple(f1.tolist()),
        support=tuple(support.tolist()),
        macro_f1=float(f1.mean()),
        accuracy=float(tp.sum() / true.size),
        confusion=tuple(tuple(row) for row in confusion.tolist()),
    )


def _labels(name: str, values: Sequence[int], num_classes: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise InputError(f"{name} has shape {array.shape}; pass a flat sequence of integer labels")
    if array.size == 0:
        return array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise InputError(
            f"{name} has dtype {array.dtype}; pass integer class labels (e.g. logits.argmax(1)), not scores"
        )
    bad = array[(array < 0) | (array >= num_classes)]
    if bad.size:
        raise InputError(
            f"{name} contains label {bad[0]} outside 0..{num_classes - 1}; "
            f"labels must index the {num_classes} classes (or raise num_classes)"
        )
    return array.astype(np.int64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out
