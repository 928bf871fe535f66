"""What a study family looks like right now: counts, best trial, throughput; as a rich table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class ArchitectureProgress:
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

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


def summarize(architecture: str, trials: Iterable[FrozenTrial], *, budget: int | None) -> ArchitectureProgress:
    """Counts by state, the best completed trial and the mean training throughput."""
    trials = list(trials)
    by_state = {state: [t for t in trials if t.state == state] for state in TrialState}
    complete = by_state[TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value, default=None)
    speeds = [t.user_attrs["train_images_per_second"] for t in trials if "train_images_per_second" in t.user_attrs]
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
        compute_seconds=sum(t.user_attrs.get("wall_time_seconds", 0.0) for t in trials),
        images_per_second=sum(speeds) / len(speeds) if speeds else None,
        fail_reason=next((t.user_attrs.get("fail_reason") for t in reversed(by_state[TrialState.FAIL])
                          if t.user_attrs.get("fail_reason")), None),
    )


def summarize_studies(studies: dict[str, optuna.Study], *, budget_attr: str = "n_trials") -> list[ArchitectureProgress]:
    return [
        summarize(architecture, study.get_trials(deepcopy=False), budget=study.user_attrs.get(budget_attr))
        for architecture, study in studies.items()
    ]


SHORT_NAMES = {"epochs": "ep", "lr": "lr", "rotation": "rot", "batch_size": "bs", "bn_momentum": "bnm"}


def format_params(params: dict, *, short: bool = False) -> str:
    """``epochs=60 lr=1.0e-04 rotation=20 batch_size=10`` (``ep=60 lr=1.0e-04 ...`` when short)."""
    parts = []
    for name, value in params.items():
        if isinstance(value, float):
            text = f"{value:.1e}" if name in ("lr", "bn_momentum") else f"{value:.3g}"
        else:
            text = str(value)
        parts.append(f"{SHORT_NAMES.get(name, name) if short else name}={text}")
    return " ".join(parts)


def progress_table(progress: list[ArchitectureProgress], *, title: str = "") -> Group:
    """One row per architecture with its trial counts, then each best trial's parameters."""
    table = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("architecture", no_wrap=True)
    for column in ("done", "ok", "pruned", "failed", "running", "img/s", "best F1"):
        table.add_column(column, justify="right", no_wrap=True)
    best_lines = []
    for row in progress:
        table.add_row(
            row.architecture,
            f"{row.finished}/{row.budget if row.budget is not None else '?'}",
            str(row.complete),
            str(row.pruned),
            str(row.failed),
            str(row.running),
            f"{row.images_per_second:.0f}" if row.images_per_second else "-",
            f"{row.best_value:.3f}" if row.best_value is not None else "-",
        )
        if row.best_trial is not None:
            best_lines.append(
                f"best {row.architecture}: trial #{row.best_trial}, val macro-F1 {row.best_value:.3f}, "
                f"{format_params(row.best_params)}"
            )
    return Group(table, *(Text(line) for line in best_lines))
