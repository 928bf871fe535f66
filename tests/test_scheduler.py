"""The scheduler's rules, on Optuna's in-memory storage in milliseconds: which architecture a worker
runs next, what counts against the budget, and how interrupted and killed trials come back.

The same rules run for real (worker processes, SQLite, PostgreSQL) in test_launch, test_faults and
test_postgres; here each rule is pinned on its own.
"""

from __future__ import annotations

import warnings

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from spheroid_hpo.tuning import records
from spheroid_hpo.tuning.studies import requeue_interrupted
from spheroid_hpo.tuning.worker import DONE, WAIT, next_architecture

PARAMS = {"lr": 1e-3}
DISTRIBUTIONS = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}


@pytest.fixture(autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def make_study(budget: int | None = 4, states: tuple[TrialState, ...] = (), name: str = "s") -> optuna.Study:
    """An in-memory study with ``budget`` recorded and one finished trial per entry of ``states``."""
    study = optuna.create_study(study_name=name, direction="maximize")
    if budget is not None:
        study.set_user_attr(records.BUDGET, budget)
    for state in states:
        study.add_trial(optuna.trial.create_trial(
            params=PARAMS, distributions=DISTRIBUTIONS, state=state,
            value=0.5 if state == TrialState.COMPLETE else None,
        ))
    return study


def running_trial(study: optuna.Study) -> optuna.Trial:
    return study.ask()  # RUNNING until told


def interrupt(study: optuna.Study, trial: optuna.Trial) -> None:
    """What the worker does on Ctrl-C or SIGTERM: FAIL, tagged interrupted."""
    trial.set_user_attr(records.FAIL_REASON, records.INTERRUPTED)
    study.tell(trial, state=TrialState.FAIL)


C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL


def test_the_least_tried_architecture_goes_next():
    studies = {"a": make_study(states=(C, C, P)), "b": make_study(states=(C,)), "c": make_study(states=(C, P))}
    assert next_architecture(studies) == "b"


def test_ties_go_round_robin_by_worker_index():
    studies = {"a": make_study(), "b": make_study(), "c": make_study()}
    assert [next_architecture(studies, worker_index=i) for i in range(4)] == ["a", "b", "c", "a"]


def test_a_queued_trial_goes_first_even_on_the_most_tried_architecture():
    studies = {"a": make_study(states=(C, C, C)), "b": make_study()}
    studies["a"].enqueue_trial(PARAMS)
    assert next_architecture(studies, worker_index=1) == "a"


def test_a_spent_budget_is_skipped_then_waits_for_running_trials_then_ends():
    studies = {"a": make_study(budget=2, states=(C, P)), "b": make_study(budget=2, states=(C,))}
    assert next_architecture(studies) == "b"
    trial = running_trial(studies["b"])
    assert next_architecture(studies) == WAIT  # b's last trial runs elsewhere: stay for a retry
    studies["b"].tell(trial, 0.4)
    assert next_architecture(studies) == DONE


def test_a_study_without_a_recorded_budget_never_runs_out():
    studies = {"a": make_study(budget=None, states=(C,) * 50)}
    assert next_architecture(studies) == "a"


def test_failed_trials_count_against_the_budget_unless_run_again():
    study = make_study(budget=3, states=(C, F))
    assert records.budget_used(study.trials) == 2
    trial = running_trial(study)
    interrupt(study, trial)
    assert records.budget_used(study.trials) == 3  # interrupted, not yet queued again: still spent
    assert requeue_interrupted(study) == 1
    assert records.budget_used(study.trials) == 3  # the queued copy stands in for it: counted once


def test_an_interrupted_trial_is_queued_once_with_its_links():
    study = make_study()
    first = running_trial(study)
    interrupt(study, first)
    assert requeue_interrupted(study) == 1
    assert requeue_interrupted(study) == 0  # a second launch does not queue it again
    copy = next(t for t in study.trials if t.state == TrialState.WAITING)
    assert copy.params == first.params
    assert copy.user_attrs[records.REQUEUED_FROM] == first.number
    assert records.checkpoint_owner(copy) == first.number


def test_a_chain_of_interrupted_copies_resumes_the_first_checkpoint_and_counts_once():
    study = make_study(budget=1)
    trial = running_trial(study)
    interrupt(study, trial)
    for _ in range(3):  # every launch is interrupted again
        requeue_interrupted(study)
        copy = study.ask()  # the worker takes the queued copy
        interrupt(study, copy)
    requeue_interrupted(study)
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1
    assert records.checkpoint_owner(waiting[0]) == trial.number
    assert records.budget_used(study.trials) == 1


def test_a_baseline_keeps_its_mark_when_queued_again():
    study = make_study()
    study.enqueue_trial(PARAMS, user_attrs=records.baseline_attrs())
    trial = study.ask()
    interrupt(study, trial)
    requeue_interrupted(study)
    copy = next(t for t in study.trials if t.state == TrialState.WAITING)
    assert records.is_baseline(copy)
    assert records.baseline_trial(study.trials).number == trial.number  # none finished: the first marked one


def test_a_heartbeat_retry_links_to_the_trial_it_stands_for():
    study = make_study(budget=2, states=(C,))
    killed = running_trial(study)
    study.tell(killed, state=TrialState.FAIL)  # what fail_stale_trials does to a dead worker's trial
    RetryHeartbeatStaleTrialCallback()(study, study.trials[killed.number])
    retry = next(t for t in study.trials if t.state == TrialState.WAITING)
    assert records.retry_links(retry) == (killed.number, [killed.number])
    assert records.checkpoint_owner(retry) == killed.number  # it resumes the killed trial's checkpoint
    # Three trials: the completed one, the killed attempt and its queued retry; the attempt does not count.
    assert len(study.trials) == 3 and records.budget_used(study.trials) == 2


def test_the_best_trial_is_the_highest_value_and_the_earliest_on_a_tie():
    study = make_study(budget=None)
    for value in (0.5, 0.8, 0.8, 0.7):
        study.add_trial(optuna.trial.create_trial(params=PARAMS, distributions=DISTRIBUTIONS, value=value))
    study.add_trial(optuna.trial.create_trial(params=PARAMS, distributions=DISTRIBUTIONS, state=TrialState.PRUNED,
                                              intermediate_values={1: 0.99}))
    assert records.best_trial(study.trials).number == 1
    assert records.best_trial([]) is None
