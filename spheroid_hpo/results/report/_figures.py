"""The report's figures: the paper's Figs. 1 and 2 per architecture, and Optuna's study plots.

Optuna's matplotlib plots go through pyplot and restyle it globally; each is
drawn inside ``rc_context`` and closed, so nothing leaks into other figures.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import optuna
from matplotlib.ticker import MaxNLocator
from optuna.trial import TrialState

from spheroid_hpo.training.figures import plot_confusion, plot_curves

_DPI = 120


@dataclass(frozen=True)
class StudyPlot:
    """A figure file, or the reason it could not be drawn."""

    path: Path | None
    note: str = ""


def curves_figure(history: list[dict], path: Path, *, architecture: str, source: str) -> Path:
    """(a) train and validation loss, (b) train and validation accuracy, per epoch."""
    return plot_curves(history, path, title=f"{architecture}: {source}")


def test_confusion_figure(confusion, class_names, path: Path, *, architecture: str, trial_number: int) -> Path:
    """(c) the test confusion matrix with the class names, counts in the cells."""
    return plot_confusion(
        confusion, class_names, path, title=f"{architecture} (trial {trial_number}): test confusion matrix"
    )


def optimization_history_figure(study: optuna.Study, path: Path, *, architecture: str) -> StudyPlot:
    """Optuna's optimisation history: every trial's value and the best so far."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return StudyPlot(None, f"{architecture}: no completed trial, so no optimisation history to plot.")
    def label(ax) -> None:
        ax.set_xlabel("trial")
        ax.set_ylabel("validation macro-F1")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    return StudyPlot(_save_optuna_plot(optuna.visualization.matplotlib.plot_optimization_history, study, path,
                                       title=f"{architecture}: optimisation history", finish=label))


def importances_figure(study: optuna.Study, path: Path, *, architecture: str) -> StudyPlot:
    """Optuna's hyperparameter importances; a note instead when they cannot be estimated."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return StudyPlot(None, f"{architecture}: hyperparameter importances need at least 2 completed trials "
                               f"(this study has {len(complete)}); run more trials to see them.")
    if len({t.value for t in complete}) == 1:
        return StudyPlot(None, f"{architecture}: all {len(complete)} completed trials scored the same "
                               f"validation macro-F1, so no hyperparameter can explain a difference.")
    try:
        saved = _save_optuna_plot(optuna.visualization.matplotlib.plot_param_importances, study, path,
                                  title=f"{architecture}: hyperparameter importances", finish=_drop_legend)
    except (ValueError, RuntimeError) as error:
        return StudyPlot(None, f"{architecture}: hyperparameter importances could not be estimated ({error}).")
    return StudyPlot(saved)


def _drop_legend(ax) -> None:
    # One objective: the legend only repeats "Objective Value".
    if ax.get_legend() is not None:
        ax.get_legend().remove()


def _save_optuna_plot(plot, study: optuna.Study, path: Path, *, title: str, finish) -> Path:
    import matplotlib.pyplot as plt

    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = plot(study)
        try:
            for loc in ("left", "center", "right"):
                ax.set_title("", loc=loc)
            ax.set_title(title, loc="left")
            finish(ax)
            ax.figure.set_size_inches(7, 4)
            ax.figure.savefig(path, dpi=_DPI, bbox_inches="tight")
        finally:
            plt.close(ax.figure)
    return Path(path)
