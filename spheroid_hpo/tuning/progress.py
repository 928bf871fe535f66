"""What a study family looks like right now: counts by state, the best trial, throughput, cost."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from spheroid_hpo.tuning import records


@dataclass(frozen=True)
class ArchitectureProgress:
    """One architecture's trial counts, budget and best trial so far."""

    architecture: str
    budget: int | None
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    best_value: float | None
    best_params: dict
    best_trial: int | None
    compute_seconds: float
    images_per_second: float | None
    fail_reason: str | None = None  # of the latest failed trial, to say why when none succeeded
    counted: int | None = None  # ended trials that count against the budget (None: as ``finished``)

    @property
    def finished(self) -> int:
        """Trials that ended, whatever their state."""
        return self.complete + self.pruned + self.failed

    @property
    def done(self) -> int:
        """Trials of the budget that ended: a failed trial that was run again counts once, as its retry
        (after a retry the table said "done 3/2")."""
        return self.finished if self.counted is None else self.counted


def summarize(architecture: str, trials: Iterable[FrozenTrial], *, budget: int | None) -> ArchitectureProgress:
    """Counts by state, the best completed trial and the mean training throughput."""
    trials = list(trials)
    by_state = {state: [t for t in trials if t.state == state] for state in TrialState}
    complete = by_state[TrialState.COMPLETE]
    best = records.best_trial(complete)
    runs = [records.RunRecord.of(t) for t in trials]
    speeds = [run.images_per_second for run in runs if run.images_per_second is not None]
    return ArchitectureProgress(
        architecture=architecture,
        budget=budget,
        complete=len(complete),
        pruned=len(by_state[TrialState.PRUNED]),
        failed=len(by_state[TrialState.FAIL]),
        running=len(by_state[TrialState.RUNNING]),
        waiting=len(by_state[TrialState.WAITING]),
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        best_trial=best.number if best else None,
        compute_seconds=sum(run.wall_time_seconds for run in runs),
        images_per_second=sum(speeds) / len(speeds) if speeds else None,
        fail_reason=next((records.fail_reason(t) for t in reversed(by_state[TrialState.FAIL])
                          if records.fail_reason(t)), None),
        counted=records.budget_used(trials) - len(by_state[TrialState.RUNNING]) - len(by_state[TrialState.WAITING]),
    )


def summarize_studies(studies: dict[str, optuna.Study]) -> list[ArchitectureProgress]:
    """``summarize`` for each architecture's study, with its recorded budget."""
    return [
        summarize(architecture, study.get_trials(deepcopy=False), budget=records.budget(study))
        for architecture, study in studies.items()
    ]
