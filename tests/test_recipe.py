"""The one training recipe (``training.recipe.fit``) and the one validated configuration (issue 24).

A retraining (``report --repeats``, ``reproduce``, ``export-best``) trains as the trial did: its
folds and its class weights included, so with the trial's seed it lands on the trial's very value.
And ``Hyperparams`` refuses out-of-range values itself, with the line a study file gets.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
from study_files import one_architecture_study, one_objective_trial

from spheroid_hpo.cli import main
from spheroid_hpo.data import SplitSpec, load_dataset, training_data
from spheroid_hpo.defaults import given_over
from spheroid_hpo.errors import InputError
from spheroid_hpo.results.best_file import BestConfig, SeedScores
from spheroid_hpo.results.family import StudyFamily
from spheroid_hpo.results.report._repeats import repeat_best
from spheroid_hpo.results.reproduce import _retrain
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.machine import machine_fingerprint
from spheroid_hpo.training.settings import TRAINING_DEFAULTS, TrainingSettings
from spheroid_hpo.tuning.objective import build_objective
from spheroid_hpo.tuning.study_file import StudyConfig, parse_study_text, with_overrides

PARAMS = {"lr": 1e-3, "rotation": 5.0, "batch_size": 8}
FOLDS = 3


def _cross_validated_trial(demo_dir: Path, tmp_path: Path):
    """One trial of a study with 3 folds and balanced class weights, as a worker runs it."""
    manifest = tmp_path / "splits.csv"
    dataset = load_dataset(demo_dir, image_size=32, manifest_path=manifest, splits=("train", "val"))
    data = training_data(dataset, manifest=manifest, cv_folds=FOLDS, split_seed=0)
    trial = one_objective_trial(data, tmp_path, PARAMS, extra_space='class_weights = "balanced"')
    return trial, manifest


def test_report_repeats_and_reproduce_retrain_a_trials_folds_and_class_weights_to_its_very_value(
        demo_dir, tmp_path):
    trial, manifest = _cross_validated_trial(demo_dir, tmp_path)
    trained = StudyFamily.hyperparams(trial)
    assert trained.class_weights == "balanced"  # recorded on the trial, not re-read from the study file

    family = SimpleNamespace(  # what repeat_best reads of a study family
        config=SimpleNamespace(training=SimpleNamespace(seed=0, weights="none", precision="fp32"),
                               data=SimpleNamespace(split=SplitSpec(), cv_folds=FOLDS)),
        data=SimpleNamespace(image_size=32), hyperparams=StudyFamily.hyperparams,
    )
    (repeated,) = repeat_best(family, {"squeezenet1_1": trial}, data_dir=demo_dir, manifest_path=manifest,
                              repeats=1, device="cpu").values()
    assert repeated.val_macro_f1 == (trial.value,)  # same folds, weights and seed: the very number

    scores = SeedScores(per_seed=(trial.value,), original=trial.value)
    best = BestConfig(
        study="s", architecture="squeezenet1_1", trial=0,
        params={name: value for name, value in trained.as_dict().items() if value is not None},
        image_size=32, precision="fp32", weights="none", data_path=str(demo_dir), demo=None, split=SplitSpec(),
        fingerprint="f" * 64, cv_folds=FOLDS,
        machine=machine_fingerprint(torch.device("cpu"), threads=torch.get_num_threads(), precision="fp32"),
        seeds=(0,), val=scores, test=scores,
    )
    run = _retrain(best, seed=0, folder=demo_dir, manifest=manifest, device=torch.device("cpu"),
                   threads=torch.get_num_threads(), out_dir=tmp_path / "reproduced", log=lambda line: None)
    assert run.val_macro_f1 == trial.value


def _cli_error(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_train_and_a_study_file_refuse_an_lr_of_5_with_the_same_line(monkeypatch, capsys, tmp_path):
    code, err = _cli_error(monkeypatch, capsys, "train", "--data", str(tmp_path / "never-read"), "--lr", "5",
                           "--out", str(tmp_path / "run"))
    assert code == 2 and err.count("\n") == 1, err
    with pytest.raises(InputError) as refused:
        parse_study_text(one_architecture_study().replace("lr = { low = 1e-4, high = 3e-3, log = true }", "lr = 5"),
                         source=Path("s.toml"))
    said = re.search(r"lr must lie in .*$", err.strip()).group(0)
    assert said == "lr must lie in (0.0, 1.0] (Adam's learning rate is positive), but got lr = 5.0"
    assert str(refused.value).endswith(f"search_space.{said}")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epochs", 0, r"^epochs must lie in \[1, 10000\]"),
    ("lr", float("nan"), r"^lr must lie in \(0.0, 1.0\]"),
    ("rotation", 181.0, r"^rotation must lie in \[0.0, 180.0\]"),
    ("batch_size", 1, r"^batch_size must lie in \[2, 4096\]"),
    ("bn_momentum", 0.0, r"^bn_momentum must lie in \(0.0, 1.0\]"),
    ("class_weights", "inverse", r"^class_weights is 'inverse'; choose one of: none, balanced$"),
    ("epochs", 2.5, r"^epochs must be int, but got 2.5$"),
])
def test_hyperparams_refuse_what_a_study_file_refuses_when_made(field, value, message):
    with pytest.raises(InputError, match=message):
        Hyperparams(**{"epochs": 1, "lr": 1e-3, "rotation": 0.0, "batch_size": 8, field: value})


def test_training_settings_are_one_schema_read_alike_with_one_precedence_rule():
    with_training = one_architecture_study(n_trials=2) + '\n[training]\nprecision = "fp8"\n'
    with pytest.raises(InputError, match=r"s.toml: training.precision is 'fp8'; choose one of: auto, fp32, bf16, "
                                         r"fp16$"):
        parse_study_text(with_training, source=Path("s.toml"))
    with pytest.raises(InputError, match=r"^precision is 'fp8'; choose one of: auto, fp32, bf16, fp16$"):
        TrainingSettings(precision="fp8")  # what train --precision fp8 and run_training get
    config = parse_study_text(with_training.replace('"fp8"', '"fp32"'), source=Path("s.toml"))
    assert config.training == TrainingSettings(precision="fp32")  # the rest from the one set of defaults
    # command line > file > default
    assert with_overrides(config, n_trials=5).n_trials == 5 and with_overrides(config).n_trials == 2
    assert parse_study_text(with_training.replace("n_trials = 2\n", "").replace('"fp8"', '"fp32"'),
                            source=Path("s.toml")).n_trials == StudyConfig.n_trials
    assert given_over(TRAINING_DEFAULTS, seed=3, precision=None) == TrainingSettings(seed=3)


def test_a_searched_weight_decay_reaches_adam_and_the_trials_record(demo_dir, tmp_path, monkeypatch):
    """Adam's weight decay, added as the README's "Where to change what" says; default 0, the paper's."""
    handed: list[float] = []
    real_adam = torch.optim.Adam

    def spy(params, **kwargs):
        handed.append(kwargs.get("weight_decay", 0.0))
        return real_adam(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", spy)
    dataset = load_dataset(demo_dir, image_size=32, manifest_path=tmp_path / "splits.csv", splits=("train", "val"))
    data = training_data(dataset, manifest=tmp_path / "splits.csv", cv_folds=None, split_seed=0)
    (tmp_path / "artifacts").mkdir()
    for extra_space, enqueued in (("weight_decay = { low = 1e-5, high = 1e-2, log = true }", {"weight_decay": 3e-4}),
                                  ("", {})):
        config = parse_study_text(one_architecture_study(extra_space=extra_space), source=Path("s.toml"))
        objective = build_objective(
            architecture="squeezenet1_1", data=data, search_space=config.search_space, device=torch.device("cpu"),
            artifact_store=FileSystemArtifactStore(str(tmp_path / "artifacts")),
            checkpoint_dir=tmp_path / "checkpoints", precision="fp32",
        )
        study = optuna.create_study(direction="maximize")
        study.enqueue_trial({**PARAMS, **enqueued})
        study.optimize(objective, n_trials=1)
        (trial,) = study.trials
        assert trial.state == TrialState.COMPLETE, trial.user_attrs
        assert StudyFamily.hyperparams(trial).weight_decay == enqueued.get("weight_decay", 0.0)
    assert handed == [3e-4, 0.0]


def test_train_takes_cv_folds_as_a_study_file_does(demo_dir, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    code, err = _cli_error(monkeypatch, capsys, "train", "--data", str(data), "--cv-folds", "1",
                           "--out", str(tmp_path / "refused"))
    assert code == 2 and "cross-validation needs at least 2 folds" in err and err.count("\n") == 1, err
    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", "train", "--data", str(demo_dir), "--arch", "squeezenet1_1",
                                      "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--device", "cpu",
                                      "--precision", "fp32", "--split-manifest", str(tmp_path / "splits.csv"),
                                      "--cv-folds", "3", "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as finished:
        main()
    assert finished.value.code in (0, None)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["config"]["cv_folds"] == 3 and len(metrics["cv_fold_val_macro_f1"]) == 3
    assert "mean validation macro-F1 over 3 folds" in capsys.readouterr().out
