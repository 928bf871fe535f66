"""Training-curve and confusion-matrix figures in the style of the paper's Fig. 1.

Figures are built as ``matplotlib.figure.Figure`` objects rather than through
pyplot, so no GUI backend or global figure registry is involved: this works
headless, in threads, and leaks no figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from spheroid_hpo.atomic_write import replacing
from spheroid_hpo.errors import InputError

__all__ = ["plot_confusion", "plot_curves", "save_figure"]

_CURVE_KEYS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
_DPI = 150


def plot_curves(history: Sequence[Mapping[str, float]], path: str | Path, *, title: str = "") -> Path:
    """Save loss (a) and accuracy (b), train vs validation, per epoch; return the path.

    ``history`` holds one dict per epoch with at least the keys epoch,
    train_loss, train_accuracy, val_loss and val_accuracy; a None value leaves
    a gap in its curve.
    """
    path = _check_path(path)
    save_figure(_curves_figure(history, title=title), path)
    return path


def plot_confusion(
    confusion: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
    normalize: bool = False,
) -> Path:
    """Save a confusion matrix (rows true, columns predicted) with counts in the cells; return the path.

    With ``normalize`` each row is divided by its total, so cells show the
    fraction of each true class (a row with no samples stays 0).
    """
    path = _check_path(path)
    save_figure(_confusion_figure(confusion, class_names, title=title, normalize=normalize), path)
    return path


def _curves_figure(history: Sequence[Mapping[str, float]], *, title: str) -> Figure:
    columns = _history_columns(history)
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    few_epochs = len(columns["epoch"]) <= 30  # markers help when there are few points only
    marker = "o" if few_epochs else None
    for ax, metric, panel in ((loss_ax, "loss", "(a) loss"), (acc_ax, "accuracy", "(b) accuracy")):
        ax.plot(columns["epoch"], columns[f"train_{metric}"], marker=marker, label="train")
        ax.plot(columns["epoch"], columns[f"val_{metric}"], marker=marker, label="validation")
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    accuracies = np.concatenate([columns["train_accuracy"], columns["val_accuracy"]])
    finite = accuracies[np.isfinite(accuracies)]
    if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
        acc_ax.set_ylim(0.0, 1.02)  # fractions: show the whole range so runs compare by eye
    if title:
        fig.suptitle(title)
    return fig


def _history_columns(history: Sequence[Mapping[str, float]]) -> dict[str, np.ndarray]:
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise InputError(f"history must be a list of per-epoch dicts, got {type(history).__name__}")
    if not history:
        raise InputError("history is empty; train for at least one epoch before plotting curves")
    columns: dict[str, list[float]] = {key: [] for key in _CURVE_KEYS}
    for index, row in enumerate(history):
        if not isinstance(row, Mapping):
            raise InputError(f"history[{index}] is a {type(row).__name__}; each entry must be a dict of epoch values")
        for key in _CURVE_KEYS:
            if key not in row:
                raise InputError(f"history[{index}] has no {key!r}; each entry needs the keys {', '.join(_CURVE_KEYS)}")
            value = row[key]
            if value is None and key != "epoch":
                columns[key].append(math.nan)
                continue
            try:
                columns[key].append(float(value))
            except (TypeError, ValueError):
                raise InputError(f"history[{index}][{key!r}] = {value!r} is not a number") from None
    return {key: np.asarray(values, dtype=np.float64) for key, values in columns.items()}


def _confusion_figure(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], *, title: str, normalize: bool
) -> Figure:
    counts = np.asarray(confusion)
    n = len(class_names)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise InputError(f"confusion has shape {counts.shape}; pass a square matrix (rows true, columns predicted)")
    if counts.shape[0] != n:
        raise InputError(
            f"confusion is {counts.shape[0]}x{counts.shape[1]} but {n} class names were given; pass one name per row"
        )
    if counts.dtype.kind not in "iu" or (counts < 0).any():
        raise InputError("confusion must hold non-negative integer counts")

    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        texts = [[f"{v:.2f}" for v in row] for row in values]
        colour_label = "fraction of true class"
        vmax = 1.0
    else:
        values = counts
        texts = [[str(int(v)) for v in row] for row in values]
        colour_label = "images"
        vmax = max(int(values.max()), 1)

    side = 1.6 + 0.9 * n
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    fig.colorbar(image, ax=ax, label=colour_label)
    for i in range(n):
        for j in range(n):
            # White on the dark half of the colour map, black on the light half.
            colour = "white" if values[i, j] > vmax / 2 else "black"
            ax.text(j, i, texts[i][j], ha="center", va="center", color=colour)
    ax.set_xticks(range(n), labels=[str(c) for c in class_names], rotation=30, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=[str(c) for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return fig


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    supported = Figure().canvas.get_supported_filetypes()
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in supported:
        raise InputError(
            f"cannot save a figure as {str(path)!r}; end the file name in .png (or one of: "
            f"{', '.join('.' + s for s in sorted(supported))})"
        )
    return path


def save_figure(fig: Figure, path: Path, *, dpi: int = _DPI) -> Path:
    """Write ``fig`` to ``path`` by write-then-rename (the format from its suffix); return ``path``."""
    path = Path(path)
    with replacing(path, suffix=path.suffix) as partial:
        fig.savefig(partial, dpi=dpi)
    return path
