"""What a study cost and what pruning saved, per architecture.

The pruner's saving is counted in epochs a pruned trial was suggested but never
trained, and estimated in time at that trial's own seconds per epoch; the
fraction is of the compute the study would have spent without pruning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from spheroid_hpo.tuning.progress import summarize
from spheroid_hpo.tuning.records import RunRecord


@dataclass(frozen=True)
class StudySummary:
    architecture: str
    complete: int
    pruned: int
    failed: int
    compute_seconds: float
    epochs_trained: int
    epochs_saved: int  # suggested but never trained, summed over pruned trials
    seconds_saved: float  # estimate: each pruned trial's untrained epochs at its own pace
    images_per_second: float | None  # mean over trials of each trial's training throughput

    @property
    def saved_fraction(self) -> float:
        """Share of the compute an unpruned study would have used that pruning saved."""
        total = self.compute_seconds + self.seconds_saved
        return self.seconds_saved / total if total > 0 else 0.0

    @property
    def epochs_saved_fraction(self) -> float:
        total = self.epochs_trained + self.epochs_saved
        return self.epochs_saved / total if total > 0 else 0.0


def summarize_study(
    architecture: str,
    trials: Iterable[FrozenTrial],
    *,
    params: Callable[[FrozenTrial], dict] = lambda trial: trial.params,
) -> StudySummary:
    """Counts by state, compute time, pruner savings and mean throughput of one architecture's trials.

    ``params`` gives a trial's hyperparameters (``StudyFamily.params`` adds fixed ones, such as a
    fixed epoch count, that Optuna does not record).
    """
    trials = list(trials)
    progress = summarize(architecture, trials, budget=None)
    epochs_trained = sum(RunRecord.of(t).epochs_trained_here for t in trials)
    epochs_saved, seconds_saved = 0, 0.0
    for trial in trials:
        suggested = params(trial).get("epochs")
        if trial.state != TrialState.PRUNED or suggested is None:
            continue
        record = RunRecord.of(trial)
        untrained = max(0, int(suggested) - record.epochs_trained)
        epochs_saved += untrained
        if record.epochs_trained_here > 0:
            seconds_saved += untrained * record.wall_time_seconds / record.epochs_trained_here
    return StudySummary(
        architecture=architecture,
        complete=progress.complete,
        pruned=progress.pruned,
        failed=progress.failed,
        compute_seconds=progress.compute_seconds,
        epochs_trained=epochs_trained,
        epochs_saved=epochs_saved,
        seconds_saved=seconds_saved,
        images_per_second=progress.images_per_second,
    )
