"""A search space that fits each net: parameters are suggested and shown only where they apply."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import torchvision.models as tvm
from torch import nn

from spheroid_hpo.results.family import StudyFamily
from spheroid_hpo.training import architectures
from spheroid_hpo.training.architectures import applicable_params, architecture_names
from spheroid_hpo.training.hyperparams import TUNABLE_PARAMS, Hyperparams
from spheroid_hpo.tuning import records
from spheroid_hpo.tuning.search_space import suggest_params
from spheroid_hpo.tuning.study_file import parse_study_text

STUDY = """
[study]
name = "s"
architectures = ["squeezenet1_1", "resnet18"]
[search_space]
epochs = 1
lr = { low = 1e-4, high = 1e-3, log = true }
rotation = 0
batch_size = 4
bn_momentum = BN
"""


@pytest.mark.parametrize("name", architecture_names())
def test_each_architecture_declares_bn_momentum_exactly_when_it_has_batchnorm(name):
    with torch.device("meta"):  # no weights allocated: VGG-16 builds in milliseconds
        spec = architectures.architecture(name)
        model = getattr(tvm, spec.builder)(**spec.builder_kwargs)
    has_batchnorm = any(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in model.modules())
    assert ("bn_momentum" in applicable_params(name)) == has_batchnorm


def test_every_tunable_applies_somewhere_and_every_declared_one_is_tunable():
    declared = {param for name in architecture_names() for param in applicable_params(name)}
    assert declared == set(TUNABLE_PARAMS)


def test_bn_momentum_is_suggested_and_stored_only_for_nets_with_batchnorm():
    config = parse_study_text(STUDY.replace("BN", "{ low = 0.01, high = 0.1 }"), source=Path("s.toml"))
    for architecture, expected in (("squeezenet1_1", False), ("resnet18", True)):
        study = optuna.create_study()
        trial = study.ask()
        params = suggest_params(trial, config.search_space, architecture=architecture)
        study.tell(trial, 0.5)
        assert ("bn_momentum" in params) == expected
        assert ("bn_momentum" in study.trials[0].params) == expected
        # Importances count only what was suggested.
        assert ("bn_momentum" in study.trials[0].distributions) == expected


def test_a_fixed_bn_momentum_is_not_reported_for_squeezenet():
    config = parse_study_text(STUDY.replace("BN", "0.05"), source=Path("s.toml"))
    family = StudyFamily(name="s", config=config, storage_url="", storage=None, studies={}, data={}, manifest_csv="")
    study = optuna.create_study()
    trial = study.ask()
    # What the objective records: the whole configuration the trial trains with.
    records.record_hyperparams(trial, Hyperparams.from_params(suggest_params(trial, config.search_space)))
    study.tell(trial, 0.5)
    frozen = study.trials[0]
    assert "bn_momentum" not in family.params(frozen, "squeezenet1_1")
    assert family.params(frozen, "resnet18")["bn_momentum"] == 0.05
