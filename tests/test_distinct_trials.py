"""A study never proposes a point it already holds: not on a relaunch, not to two workers at once.

Each "launch" here is what a new ``spheroid-hpo launch`` does for its first worker: load the
studies afresh from storage (new sampler objects, as in a new process) and run trials. The
trials only suggest their parameters, so these run in well under a second; the real
processes (three launches, two launches at once) are in tests/test_relaunch.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from optuna.trial import TrialState
from study_files import one_architecture_study

from spheroid_hpo.tuning.search_space import param_distributions, suggest_params
from spheroid_hpo.tuning.studies import load_studies
from spheroid_hpo.tuning.study_file import parse_study_text

# 3 x 2 x 2 = 12 points: a random sampler drawing 9 of them repeats some almost surely.
SMALL_SPACE = """
[study]
name = "small"
architectures = ["squeezenet1_1"]
n_trials = 9

[search_space]
epochs = { choices = [1, 2, 3] }
lr = { choices = [1e-4, 1e-3] }
rotation = 10.0
batch_size = { low = 4, high = 8, step = 4 }

[sampler]
name = "SAMPLER"
seed = 0
n_startup_trials = 10

[pruner]
name = "none"
"""


def _new_study(text: str) -> tuple[object, optuna.storages.BaseStorage]:
    config = parse_study_text(text, source=Path("s.toml"))
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name=config.study_name("squeezenet1_1"), storage=storage, direction="maximize")
    return config, storage


def _launch(config, storage, n_trials: int) -> None:
    """What one launch's worker does to the study, without training."""
    (study,) = load_studies(config, storage).values()
    study.optimize(lambda trial: float(len(suggest_params(trial, config.search_space))), n_trials=n_trials)


def _points(storage, config) -> list[tuple]:
    study = optuna.load_study(study_name=config.study_name("squeezenet1_1"), storage=storage)
    return [tuple(sorted(t.params.items())) for t in study.trials]


def test_a_study_relaunched_three_times_never_repeats_a_point():
    """Issue 26, H2: each launch re-seeded its sampler alike and replayed the last launch's points."""
    for sampler in ("tpe", "random"):
        config, storage = _new_study(SMALL_SPACE.replace("SAMPLER", sampler))
        for n_trials in (3, 3, 3):  # launch, then two relaunches that extend the study
            _launch(config, storage, n_trials)
        points = _points(storage, config)
        assert len(points) == 9
        assert len(set(points)) == 9, (sampler, points)


def test_two_workers_that_ask_at_once_draw_different_points():
    """Neither has stored its params when the other draws, so only the seeds can keep them apart."""
    config, storage = _new_study(one_architecture_study(sampler="random"))
    (first,) = load_studies(config, storage).values()
    (second,) = load_studies(config, storage).values()  # another launch's worker, or another machine's
    a, b = first.ask(), second.ask()
    assert a.relative_params != b.relative_params  # both drawn before either is stored
    assert suggest_params(a, config.search_space) != suggest_params(b, config.search_space)


def test_a_queued_point_is_not_proposed_again():
    """The baseline and retries wait in the queue with their params; a sampled trial must not take them."""
    config, storage = _new_study(SMALL_SPACE.replace("SAMPLER", "random"))
    (study,) = load_studies(config, storage).values()
    for epochs in (1, 2, 3):
        for lr in (1e-4, 1e-3):
            study.enqueue_trial({"epochs": epochs, "lr": lr, "batch_size": 4})  # every point with batch 4
    space = param_distributions(config.search_space, architecture="squeezenet1_1")
    for number in range(6, 30):
        trial = optuna.trial.FrozenTrial(
            number=number, trial_id=number, state=TrialState.RUNNING, value=None, datetime_start=None,
            datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
            intermediate_values={},
        )
        study.sampler.before_trial(study, trial)
        assert study.sampler.sample_relative(study, trial, space)["batch_size"] == 8


def test_a_used_up_search_space_repeats_a_point_with_a_warning_instead_of_hanging(caplog):
    config, storage = _new_study(SMALL_SPACE.replace("SAMPLER", "random")
                                 .replace("epochs = { choices = [1, 2, 3] }", "epochs = 1")
                                 .replace("lr = { choices = [1e-4, 1e-3] }", "lr = 1e-3"))
    with caplog.at_level(logging.WARNING, logger="spheroid_hpo.tuning.distinct"):
        _launch(config, storage, 3)  # two points (batch 4 or 8), three trials
    assert sorted(set(_points(storage, config))) == [(("batch_size", 4),), (("batch_size", 8),)]
    assert "already tried" in caplog.text


def test_the_sampled_space_is_what_the_trials_ask_for():
    """The sampler draws whole points from ``param_distributions``; they must be the distributions
    ``suggest_params`` asks with, or Optuna would sample those parameters on its own, unchecked."""
    text = one_architecture_study(extra_space='class_weights = { choices = ["none", "balanced"] }')
    config, storage = _new_study(text)
    (study,) = load_studies(config, storage).values()
    study.optimize(lambda trial: float(len(suggest_params(trial, config.search_space,
                                                          architecture="squeezenet1_1"))), n_trials=2)
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        assert trial.distributions == param_distributions(config.search_space, architecture="squeezenet1_1")
