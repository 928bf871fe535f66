"""Interrupted trials are queued again once each, however often a launch is interrupted."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from spheroid_hpo.tuning.records import FAIL_REASON, INTERRUPTED, RESUMES_TRIAL, budget_used
from spheroid_hpo.tuning.studies import requeue_interrupted


def _interrupted(trial: optuna.Trial) -> float:
    trial.suggest_float("lr", 1e-5, 1e-3, log=True)
    trial.set_user_attr(FAIL_REASON, INTERRUPTED)
    raise KeyboardInterrupt  # Ctrl-C in the middle of the trial


def test_a_trial_interrupted_at_every_launch_is_queued_once_and_counted_once():
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    for launch in range(4):
        try:
            study.optimize(_interrupted, n_trials=1)  # runs the waiting copy, if any, else a new trial
        except KeyboardInterrupt:
            pass
        assert requeue_interrupted(study) == 1, f"launch {launch}"
        waiting = [t for t in study.trials if t.state == TrialState.WAITING]
        assert len(waiting) == 1, f"launch {launch}: {len(waiting)} copies of one trial waiting"
        # Every copy resumes the checkpoint of the trial first interrupted.
        assert waiting[0].user_attrs[RESUMES_TRIAL] == 0
        assert budget_used(study.trials) == 1  # one point of the search, however often it was interrupted
    assert requeue_interrupted(study) == 0  # a launch that was not interrupted queues nothing more


def test_the_progress_table_counts_a_trial_and_its_retry_once():
    """Issue 26, L13: after a retry the live table said "done 3/2" and launch "finished 3 trials"."""
    from spheroid_hpo.tuning.progress import summarize

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    try:
        study.optimize(_interrupted, n_trials=1)
    except KeyboardInterrupt:
        pass
    requeue_interrupted(study)
    assert summarize("a", study.trials, budget=2).done == 0  # interrupted, its copy waits
    study.optimize(lambda trial: trial.suggest_float("lr", 1e-5, 1e-3, log=True), n_trials=2)
    row = summarize("a", study.trials, budget=2)
    assert (row.finished, row.done) == (3, 2)  # the interrupted trial, its copy and one more
