"""The study file's sampler choice reaches Optuna: tpe, random and gp (Optuna's GPSampler)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from spheroid_hpo.errors import InputError
from spheroid_hpo.tuning.studies import build_sampler
from spheroid_hpo.tuning.study_file import parse_study_text

STUDY = """
[study]
name = "s"
architectures = ["squeezenet1_1"]

[search_space]
epochs = 2
lr = { low = 1e-5, high = 1e-2, log = true }
rotation = { low = 0, high = 30 }
batch_size = 4

[sampler]
name = "NAME"
seed = 3
n_startup_trials = 2
"""


@pytest.mark.parametrize(("name", "kind"), [("tpe", optuna.samplers.TPESampler),
                                            ("random", optuna.samplers.RandomSampler),
                                            ("gp", optuna.samplers.GPSampler)])
def test_each_sampler_name_builds_that_sampler(name, kind):
    config = parse_study_text(STUDY.replace("NAME", name), source=Path("s.toml"))
    assert isinstance(build_sampler(config.sampler, worker_index=1), kind)


def test_the_gp_sampler_proposes_from_the_search_space_after_its_startup_trials():
    config = parse_study_text(STUDY.replace("NAME", "gp"), source=Path("s.toml"))
    study = optuna.create_study(direction="maximize", sampler=build_sampler(config.sampler))
    for _ in range(4):  # 2 random startup trials, then 2 from the Gaussian process
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-5, 1e-2, log=True)
        study.tell(trial, -abs(lr - 1e-3))
    assert all(1e-5 <= t.params["lr"] <= 1e-2 for t in study.trials)
    assert len({t.params["lr"] for t in study.trials}) == 4


def test_an_unknown_sampler_is_one_line_naming_the_valid_ones():
    with pytest.raises(InputError, match="sampler.name is 'bayes'; choose one of: tpe, random, gp"):
        parse_study_text(STUDY.replace("NAME", "bayes"), source=Path("s.toml"))
