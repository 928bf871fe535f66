"""Training curves and confusion-matrix figures: valid PNGs with the paper's Fig. 1 content."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from spheroid_hpo.errors import InputError
from spheroid_hpo.training.figures import _confusion_figure, _curves_figure, plot_confusion, plot_curves

CLASS_NAMES = ("0_background", "1_dead_cells", "2_live_outside", "3_live_inside")
CONFUSION = ((50, 2, 0, 1), (3, 20, 4, 0), (0, 1, 30, 6), (0, 0, 5, 40))


def _history(epochs: int = 5) -> list[dict[str, float]]:
    return [
        {
            "epoch": e,
            "train_loss": 1.4 / e,
            "train_accuracy": 1.0 - 0.5 / e,
            "val_loss": 1.5 / e + 0.05,
            "val_accuracy": 0.95 - 0.5 / e,
            "val_macro_f1": 0.9 - 0.5 / e,
            "seconds": 1.0,
        }
        for e in range(1, epochs + 1)
    ]


def _png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_plot_curves_writes_a_wide_png(tmp_path: Path):
    path = plot_curves(_history(), tmp_path / "figs" / "curves.png", title="mobilenet_v3_large")
    assert path == tmp_path / "figs" / "curves.png"
    width, height = _png_size(path)
    assert 800 <= width <= 3000 and 300 <= height <= 1500
    assert width > 1.8 * height  # two panels side by side


def test_curves_have_loss_and_accuracy_panels_with_train_and_val():
    fig = _curves_figure(_history(5), title="run 7")
    loss_ax, acc_ax = fig.axes
    assert (loss_ax.get_ylabel(), acc_ax.get_ylabel()) == ("loss", "accuracy")
    for ax in (loss_ax, acc_ax):
        assert ax.get_xlabel() == "epoch"
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "validation"]
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 5]
        assert ticks and all(float(t).is_integer() for t in ticks)
    train_loss, val_loss = loss_ax.get_lines()
    assert list(train_loss.get_xdata()) == [1, 2, 3, 4, 5]
    assert list(val_loss.get_ydata()) == pytest.approx([1.5 / e + 0.05 for e in range(1, 6)])
    assert fig.get_suptitle() == "run 7"


def test_missing_values_leave_gaps():
    history = _history(3)
    history[1]["val_loss"] = None
    fig = _curves_figure(history, title="")
    val_loss = fig.axes[0].get_lines()[1].get_ydata()
    assert val_loss[0] == pytest.approx(1.55) and val_loss[1] != val_loss[1]  # NaN


@pytest.mark.parametrize(
    ("history", "fragment"),
    [([], "history is empty"), ([{"epoch": 1, "train_loss": 1.0}], "history\\[0\\] has no 'train_accuracy'")],
)
def test_bad_history_raises_input_error(tmp_path: Path, history, fragment: str):
    with pytest.raises(InputError, match=fragment):
        plot_curves(history, tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


def test_plot_confusion_writes_a_png(tmp_path: Path):
    path = plot_confusion(CONFUSION, CLASS_NAMES, tmp_path / "confusion.png", title="test split")
    width, height = _png_size(path)
    assert 400 <= width <= 2500 and 400 <= height <= 2500


def test_confusion_shows_counts_class_names_and_colour_bar():
    fig = _confusion_figure(CONFUSION, CLASS_NAMES, title="test", normalize=False)
    ax, colour_bar = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == list(CLASS_NAMES)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASS_NAMES)
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("true", "predicted")
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert {k: t.get_text() for k, t in cells.items()} == {
        (i, j): str(CONFUSION[i][j]) for i in range(4) for j in range(4)
    }
    # Dark cells (large counts) get white text, light cells black.
    assert cells[(0, 0)].get_color() == "white" and cells[(0, 1)].get_color() == "black"
    assert colour_bar.get_ylabel() == "images"


def test_normalized_confusion_shows_row_fractions():
    fig = _confusion_figure(((3, 1), (0, 0)), ("a", "b"), title="", normalize=True)
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in fig.axes[0].texts}
    assert texts == {(0, 0): "0.75", (0, 1): "0.25", (1, 0): "0.00", (1, 1): "0.00"}


@pytest.mark.parametrize(
    ("confusion", "names", "path", "fragment"),
    [
        (CONFUSION, CLASS_NAMES[:3], "c.png", "4x4 but 3 class names"),
        (((1, 2, 3),), ("a",), "c.png", "square"),
        (((1, -1), (0, 2)), ("a", "b"), "c.png", "non-negative integer"),
        (CONFUSION, CLASS_NAMES, "c.xyz", "end the file name in .png"),
    ],
)
def test_bad_confusion_raises_input_error(tmp_path: Path, confusion, names, path: str, fragment: str):
    with pytest.raises(InputError, match=fragment):
        plot_confusion(confusion, names, tmp_path / path)
