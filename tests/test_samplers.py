"""The study file's sampler and pruner choices reach Optuna: tpe, random and gp (Optuna's GPSampler);
median, successive halving, hyperband and none. The builders are registries keyed by the names
the study-file parser accepts, and an unknown name is an error listing the valid ones."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from spheroid_hpo.errors import InputError
from spheroid_hpo.tuning.studies import PRUNER_BUILDERS, SAMPLER_BUILDERS, build_pruner, build_sampler
from spheroid_hpo.tuning.study_file import (
    CV_PRUNERS,
    PRUNERS,
    SAMPLERS,
    PrunerConfig,
    SamplerConfig,
    parse_study_text,
)

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

PRUNER_STUDY = """
[study]
name = "s"
architectures = ["squeezenet1_1"]

[search_space]
epochs = { low = 2, high = 7 }
lr = 1e-3
rotation = 0
batch_size = 4

[pruner]
name = "NAME"
n_startup_trials = 4
n_warmup_steps = 1
min_resource = 2
reduction_factor = 4
"""

SAMPLER_KINDS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                 "gp": optuna.samplers.GPSampler}
PRUNER_KINDS = {"median": optuna.pruners.MedianPruner, "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
                "hyperband": optuna.pruners.HyperbandPruner, "none": optuna.pruners.NopPruner}


def test_the_registries_are_keyed_by_exactly_the_names_the_study_file_accepts():
    assert tuple(SAMPLER_BUILDERS) == SAMPLERS
    assert tuple(PRUNER_BUILDERS) == PRUNERS
    assert set(CV_PRUNERS) <= set(PRUNERS)
    # the expected classes below cover every name too, so a new name needs a new expectation
    assert tuple(SAMPLER_KINDS) == SAMPLERS and tuple(PRUNER_KINDS) == PRUNERS


@pytest.mark.parametrize(("name", "kind"), SAMPLER_KINDS.items())
def test_each_sampler_name_builds_that_sampler(name, kind):
    config = parse_study_text(STUDY.replace("NAME", name), source=Path("s.toml"))
    sampler = build_sampler(config.sampler).base
    assert type(sampler) is kind
    if name != "random":
        assert sampler._n_startup_trials == 2
    if name == "tpe":
        assert sampler._constant_liar


@pytest.mark.parametrize(("name", "kind"), PRUNER_KINDS.items())
def test_each_pruner_name_builds_that_pruner_with_the_study_files_settings(name, kind):
    config = parse_study_text(PRUNER_STUDY.replace("NAME", name), source=Path("p.toml"))
    pruner = build_pruner(config.pruner, max_epochs=config.max_epochs)
    assert type(pruner) is kind
    if name == "median":
        assert (pruner._n_startup_trials, pruner._n_warmup_steps) == (4, 1)
    if name == "successive_halving":
        assert (pruner._min_resource, pruner._reduction_factor) == (2, 4)
    if name == "hyperband":
        assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (2, 7, 4)


def test_an_unknown_name_reaching_a_builder_is_an_error_listing_the_valid_names():
    # a config built in code skips the parser's check; the builder must not fall back to a default
    with pytest.raises(InputError, match=r"^unknown sampler 'tpee' \(did you mean 'tpe'\?\); choose one of: "
                                         r"tpe, random, gp$"):
        build_sampler(SamplerConfig(name="tpee"))
    with pytest.raises(InputError, match=r"^unknown pruner 'asha'; choose one of: "
                                         r"median, successive_halving, hyperband, none$"):
        build_pruner(PrunerConfig(name="asha"), max_epochs=5)


def test_the_gp_sampler_proposes_from_the_search_space_after_its_startup_trials():
    config = parse_study_text(STUDY.replace("NAME", "gp"), source=Path("s.toml"))
    study = optuna.create_study(direction="maximize", sampler=build_sampler(config.sampler).base)
    for _ in range(4):  # 2 random startup trials, then 2 from the Gaussian process
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-5, 1e-2, log=True)
        study.tell(trial, -abs(lr - 1e-3))
    assert all(1e-5 <= t.params["lr"] <= 1e-2 for t in study.trials)
    assert len({t.params["lr"] for t in study.trials}) == 4


def test_an_unknown_sampler_is_one_line_naming_the_valid_ones():
    with pytest.raises(InputError, match="sampler.name is 'bayes'; choose one of: tpe, random, gp"):
        parse_study_text(STUDY.replace("NAME", "bayes"), source=Path("s.toml"))
