"""Cross-validated trials: [data] cv_folds = K, folds of train+val, mean value, fold-level pruning."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
from study_files import one_architecture_study

from spheroid_hpo.data import LabeledFile, SplitSpec, TrainingData, assign_folds, load_dataset
from spheroid_hpo.errors import InputError
from spheroid_hpo.training import loop
from spheroid_hpo.training import recipe as recipe_module
from spheroid_hpo.tuning import objective as objective_module
from spheroid_hpo.tuning.objective import build_objective
from spheroid_hpo.tuning.records import CV_SCORES
from spheroid_hpo.tuning.study_file import parse_study_text


def _files(per_class: int = 20) -> list[LabeledFile]:
    return [LabeledFile(f"c{label}/g{i // 3}_{i:03d}.png", label) for label in range(3) for i in range(per_class)]


def test_folds_are_stratified_and_keep_groups_and_duplicates_together():
    files = _files()
    groups = [f.path.split("/")[0] + f.path.split("/")[1].split("_")[0] for f in files]
    together = [("c0/g0_000.png", "c0/g5_015.png"), ("c1/g1_003.png", "c2/g6_018.png")]
    for seed in range(40):
        folds = assign_folds(files, folds=4, seed=seed, groups=groups, together=together)
        fold_of = dict(zip((f.path for f in files), folds))
        assert set(folds) == {0, 1, 2, 3}
        for label in range(3):
            assert {fold_of[f.path] for f in files if f.label == label} == {0, 1, 2, 3}
        for group in set(groups):
            assert len({fold for g, fold in zip(groups, folds) if g == group}) == 1
        for pair in together:
            assert len({fold_of[p] for p in pair}) == 1
    sizes = Counter(assign_folds(files, folds=4, seed=0))
    assert max(sizes.values()) - min(sizes.values()) <= 3  # 60 files, 15 a fold give or take a group


@pytest.mark.parametrize("folds, problem", [(1, "folds=1"), (30, "lower \\[data\\] cv_folds")])
def test_impossible_fold_counts_are_input_errors(folds, problem):
    with pytest.raises(InputError, match=problem):
        assign_folds(_files(), folds=folds, seed=0)


def test_cv_folds_is_read_and_validated_with_the_pruner():
    text = one_architecture_study()
    assert parse_study_text(text, source=Path("s.toml")).data.cv_folds is None
    def with_folds(text: str, folds: int) -> str:
        return text.replace("[data]\n", f"[data]\ncv_folds = {folds}\n")

    config = parse_study_text(with_folds(text, 3), source=Path("s.toml"))
    assert config.data.cv_folds == 3
    with pytest.raises(InputError, match="data.cv_folds must be at least 2"):
        parse_study_text(with_folds(text, 1), source=Path("s.toml"))
    hyperband = one_architecture_study(pruner="hyperband")
    with pytest.raises(InputError, match="reports once per fold; use one of: median, none"):
        parse_study_text(with_folds(hyperband, 3), source=Path("s.toml"))


PARAMS = {"lr": 1e-3, "rotation": 5.0, "batch_size": 8}


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def _cv_trial(demo_dir, tmp_path, monkeypatch, *, pruner=None, folds=3, epochs=1):
    dataset = load_dataset(demo_dir, image_size=32, manifest_path=tmp_path / "splits.csv", splits=("train", "val"))
    files = [LabeledFile(p, int(label))
             for s in (dataset.train, dataset.val) for p, label in zip(s.paths, s.labels.tolist())]
    data = TrainingData(train=dataset.train, val=dataset.val, class_names=dataset.class_names, image_size=32,
                     folds=tuple(assign_folds(files, folds=folds, seed=0)))
    runs = []
    real_train = loop.train

    def spy(model, **kwargs):
        runs.append((list(kwargs["train_labels"]), len(kwargs["val_images"])))
        return real_train(model, **kwargs)

    monkeypatch.setattr(objective_module.loop, "train", spy)
    config = parse_study_text(one_architecture_study(epochs=epochs), source=Path("s.toml"))
    (tmp_path / "artifacts").mkdir()
    objective = build_objective(
        architecture="squeezenet1_1", data=data, search_space=config.search_space, device=torch.device("cpu"),
        artifact_store=FileSystemArtifactStore(str(tmp_path / "artifacts")),
        checkpoint_dir=tmp_path / "checkpoints", precision="fp32",
    )
    study = optuna.create_study(direction="maximize", pruner=pruner)
    study.enqueue_trial(PARAMS)
    study.optimize(objective, n_trials=1)
    return study.trials[0], runs, files


def test_a_cross_validated_trial_trains_once_per_fold_and_scores_the_mean(demo_dir, tmp_path, monkeypatch):
    trial, runs, files = _cv_trial(demo_dir, tmp_path, monkeypatch)
    assert trial.state == TrialState.COMPLETE
    scores = trial.user_attrs[CV_SCORES]
    assert len(scores) == 3 and len(runs) == 3
    assert trial.value == pytest.approx(statistics.fmean(scores))
    # Each fold validates on its own images; together the folds cover train + val once.
    assert sum(val for _, val in runs) == len(files)
    assert all(len(train) + val == len(files) for train, val in runs)
    assert trial.intermediate_values == pytest.approx(
        {k: statistics.fmean(scores[:k]) for k in (1, 2, 3)}
    )
    assert not list((tmp_path / "checkpoints").glob("*.pt"))


def test_pruning_judges_the_running_mean_after_each_fold(demo_dir, tmp_path, monkeypatch):
    # Two epochs a fold: with one, an epoch-level report would be the fold's own score at step 1 and
    # (never pruned after its last epoch) the trial would look the same.
    trial, runs, _ = _cv_trial(demo_dir, tmp_path, monkeypatch, pruner=_AlwaysPrune(), epochs=2)
    assert trial.state == TrialState.PRUNED
    assert len(runs) == 1 and list(trial.intermediate_values) == [1]  # fold 1, not an epoch
    assert trial.intermediate_values[1] == pytest.approx(trial.user_attrs[CV_SCORES][0])


def test_best_toml_carries_cv_folds_and_class_weights(tmp_path):
    from spheroid_hpo.results.best_file import BestConfig, SeedScores, read_best_config
    from spheroid_hpo.training.machine import machine_fingerprint

    scores = SeedScores(per_seed=(0.5, 0.6), original=0.55)
    best = BestConfig(
        study="s", architecture="squeezenet1_1", trial=3,
        params={"epochs": 2, "lr": 1e-3, "rotation": 0.0, "batch_size": 8, "class_weights": "balanced"},
        image_size=32, precision="fp32", weights="none", data_path="/data", demo=None, split=SplitSpec(),
        fingerprint="f" * 64,
        machine=machine_fingerprint(torch.device("cpu"), threads=1, precision="fp32"),
        seeds=(0, 1), val=scores, test=scores, cv_folds=4,
    )
    path = tmp_path / "best.toml"
    path.write_text(best.to_toml())
    assert "cv_folds = 4" in path.read_text()
    assert read_best_config(path) == best


def test_the_report_shows_mean_and_sd_over_folds_of_each_best_trial():
    from types import SimpleNamespace

    from spheroid_hpo.results.report._content import _cross_validation

    trial = SimpleNamespace(number=7, user_attrs={CV_SCORES: [0.5, 0.7, 0.6]})
    family = SimpleNamespace(config=SimpleNamespace(data=SimpleNamespace(cv_folds=3)))
    blocks = _cross_validation(SimpleNamespace(family=family, best={"resnet18": trial}))
    (table,) = [block for block in blocks if hasattr(block, "rows")]
    assert table.rows == (("resnet18", "#7", "0.600 ± 0.100", "0.500, 0.700, 0.600"),)
    family.config.data.cv_folds = None
    assert _cross_validation(SimpleNamespace(family=family, best={"resnet18": trial})) == []


def test_a_worker_draws_folds_of_train_and_val_that_keep_duplicates_together(demo_dir, tmp_path):
    import shutil

    from spheroid_hpo.tuning.create import create_study_family
    from spheroid_hpo.tuning.worker import _load_trial_data

    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    copy = data / "1_dead_cells" / "copy_of_first.png"
    shutil.copy(sorted((data / "1_dead_cells").glob("*.png"))[0], copy)
    text = one_architecture_study().replace("[data]\n", f"[data]\ncv_folds = 3\npath = \"{data}\"\n")
    study_file = tmp_path / "s.toml"
    study_file.write_text(text)
    config = parse_study_text(text, source=study_file)
    family = create_study_family(config=config, runs_dir=tmp_path / "runs")
    trial_data = _load_trial_data(config, family.studies, data_dir=None, runs_dir=tmp_path / "runs",
                                  device=torch.device("cpu"))
    paths = trial_data.train.paths + trial_data.val.paths
    fold_of = dict(zip(paths, trial_data.folds))
    assert set(trial_data.folds) == {0, 1, 2} and len(paths) == len(trial_data.folds)
    (pair,) = [group for group in load_dataset(data, image_size=32,
                                               manifest_path=tmp_path / "runs" / "wiring" / "splits.csv",
                                               splits=("train",)).duplicates.exact]
    assert all(p in fold_of for p in pair)  # both copies in train+val with this seed
    assert len({fold_of[p] for p in pair}) == 1
    runs = list(trial_data.runs())
    assert len(runs) == 3 and sum(len(val) for _, val in runs) == len(paths)


def test_reproduce_retrains_a_cross_validated_trial_to_its_very_value(demo_dir, tmp_path, monkeypatch):
    from spheroid_hpo.results.best_file import BestConfig, SeedScores
    from spheroid_hpo.results.reproduce import _retrain
    from spheroid_hpo.training.machine import machine_fingerprint

    trial, _, _ = _cv_trial(demo_dir, tmp_path, monkeypatch)
    scores = SeedScores(per_seed=(trial.value,), original=trial.value)
    config = BestConfig(
        study="s", architecture="squeezenet1_1", trial=0, params={"epochs": 1, **PARAMS}, image_size=32,
        precision="fp32", weights="none", data_path=str(demo_dir), demo=None, split=SplitSpec(),
        fingerprint="f" * 64,
        machine=machine_fingerprint(torch.device("cpu"), threads=torch.get_num_threads(), precision="fp32"),
        seeds=(0,), val=scores, test=scores, cv_folds=3,
    )
    run = _retrain(config, seed=0, folder=demo_dir, manifest=tmp_path / "splits.csv", device=torch.device("cpu"),
                   threads=torch.get_num_threads(), out_dir=tmp_path / "retrained", log=lambda line: None)
    assert run.val_macro_f1 == trial.value  # same machine, same folds, same seed: the very number
    assert 0.0 <= run.test_macro_f1 <= 1.0


def test_a_cross_validated_trial_calibrates_on_images_its_model_never_trained_on(demo_dir, tmp_path, monkeypatch):
    fitted_on = []
    real_calibrate = recipe_module.calibrate

    def spy(model, *, val_images, val_labels):
        fitted_on.append(len(val_images))
        return real_calibrate(model, val_images=val_images, val_labels=val_labels)

    monkeypatch.setattr(recipe_module, "calibrate", spy)
    trial, runs, _ = _cv_trial(demo_dir, tmp_path, monkeypatch)
    assert trial.state == TrialState.COMPLETE
    # The last fold's validation part, not the manifest's validation split (mostly that model's training data).
    assert fitted_on == [runs[-1][1]]


@pytest.mark.parametrize("paused_in", ["calibration", "first-record"])
def test_a_trial_failed_by_another_worker_after_its_last_epoch_is_left_to_its_retry(demo_dir, tmp_path, monkeypatch,
                                                                                      paused_in):
    # Paused after its last epoch past the heartbeat grace period: another worker marks the trial
    # FAIL and queues its retry. Writing to it must stop quietly, never crash the worker: whether the
    # pause ends before the objective's check (calibration) or between the check and a write.
    from spheroid_hpo.tuning.objective import TrialTakenOver

    def taken_over() -> None:
        study = optuna.load_study(study_name="takeover", storage=storage)
        storage.set_trial_state_values(study.trials[-1]._trial_id, optuna.trial.TrialState.FAIL)

    module, name = ((recipe_module, "calibrate") if paused_in == "calibration" else
                    (objective_module, "_record_history"))
    real = getattr(module, name)

    def paused_then_taken_over(*args, **kwargs):
        taken_over()
        return real(*args, **kwargs)

    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="takeover", storage=storage, direction="maximize")
    monkeypatch.setattr(module, name, paused_then_taken_over)
    monkeypatch.setattr(optuna, "create_study",
                        lambda **kwargs: optuna.load_study(study_name="takeover", storage=storage))
    with pytest.raises(TrialTakenOver):
        _cv_trial(demo_dir, tmp_path, monkeypatch, folds=2)
    assert optuna.load_study(study_name="takeover", storage=storage).trials[-1].state == TrialState.FAIL
