"""Categorical search-space keys ({ choices = [...] }) and class_weights = "balanced"."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

from spheroid_hpo.errors import InputError
from spheroid_hpo.training import loop
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.tuning.search_space import suggest_params
from spheroid_hpo.tuning.study_file import parse_study_text

BASE = """
[study]
name = "s"
architectures = ["squeezenet1_1"]
[search_space]
epochs = 1
lr = { low = 1e-4, high = 1e-3, log = true }
rotation = 0
batch_size = 4
"""


def parse(extra: str):
    return parse_study_text(BASE + extra, source=Path("s.toml"))


def test_choices_make_a_categorical_parameter_that_optuna_suggests():
    config = parse('class_weights = { choices = ["none", "balanced"] }\n[baseline]\nclass_weights = "balanced"\n')
    spec = {s.name: s for s in config.search_space}["class_weights"]
    assert (spec.kind, spec.choices) == ("categorical", ("none", "balanced"))
    assert config.baseline["class_weights"] == "balanced"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {suggest_params(study.ask(), config.search_space)["class_weights"] for _ in range(20)}
    assert seen == {"none", "balanced"}


def test_choices_work_for_numeric_keys_too():
    config = parse_study_text(BASE.replace("batch_size = 4", "batch_size = { choices = [4, 8] }"),
                              source=Path("s.toml"))
    assert {s.name: s for s in config.search_space}["batch_size"].choices == (4, 8)


@pytest.mark.parametrize("line, problem", [
    ('class_weights = { choices = ["none", "inverse"] }', "choose one of"),
    ('class_weights = { choices = [] }', "at least one value"),
    ('class_weights = { choices = ["none", "none"] }', "twice"),
    ('class_weights = { choices = ["none"], low = 1 }', "is not a known key"),
    ('class_weights = { low = "a", high = "b" }', "takes choices, not a range"),
    ('class_weights = "sometimes"', "choose one of"),
    ('class_weights = { choices = [1, 2] }', "must be str"),
])
def test_bad_choices_are_one_line_input_errors_naming_the_value(line, problem):
    with pytest.raises(InputError, match=problem) as caught:
        parse(line + "\n")
    assert "\n" not in str(caught.value) and "class_weights" in str(caught.value)


def test_batch_size_choices_are_validated_like_ranges():
    # The one bounds table that fixed values and range ends go through.
    with pytest.raises(InputError, match=r"batch_size.choices must lie in \[2, .*but got batch_size = 1"):
        parse_study_text(BASE.replace("batch_size = 4", "batch_size = { choices = [1, 8] }"), source=Path("s.toml"))


def test_balanced_weights_are_inverse_train_frequency():
    labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 4)
    weights = loop.class_weights_for(labels, num_classes=3, mode="balanced")
    assert weights.tolist() == pytest.approx([12 / 18, 12 / 6, 12 / 12])
    assert loop.class_weights_for(labels, num_classes=3, mode="none") is None
    with pytest.raises(InputError, match="mode='inverse'"):
        loop.class_weights_for(labels, num_classes=3, mode="inverse")


def test_balanced_weights_reach_the_training_loss(monkeypatch):
    seen = []
    real = loop.F.cross_entropy

    def spy(logits, labels, *args, weight=None, **kwargs):
        seen.append(weight)
        return real(logits, labels, *args, weight=weight, **kwargs)

    monkeypatch.setattr(loop.F, "cross_entropy", spy)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    images = torch.rand(12, 3, 8, 8, dtype=torch.float16)
    labels = torch.tensor([0] * 9 + [1] * 3)
    loop.train(model, train_images=images, train_labels=labels, val_images=images, val_labels=labels,
                 num_classes=2,
                 hyperparams=Hyperparams(epochs=1, lr=1e-3, batch_size=4, rotation=0, class_weights="balanced"),
                 seed=0, precision="fp32",
                 )
    trained = [w for w in seen if w is not None]
    assert trained and trained[0].tolist() == pytest.approx([12 / 18, 12 / 6])
