"""No validation or test image reaches training or fitting by any path a score depends on.

Each test watches what the real code hands to the training loop or to the calibration
(spies around ``loop.train``, ``calibrate`` and ``run_training``), and compares it, image by
image, with the split manifest: a train run, a trial without and with folds (and the
manifest's groups), and the repeats of ``report --repeats``. The class weights are
pinned in test_science_claims.py.
"""

from __future__ import annotations

import re
import shutil
from types import SimpleNamespace

import torch
from split_manifests import GROUP_BY, read_manifest
from study_files import one_architecture_study, one_objective_trial

from spheroid_hpo.data import SplitSpec, load_dataset
from spheroid_hpo.results.report import _repeats as repeats_module
from spheroid_hpo.training import recipe as recipe_module
from spheroid_hpo.training import run as run_module
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.tuning import objective as objective_module
from spheroid_hpo.tuning.create import create_study_family
from spheroid_hpo.tuning.study_file import parse_study_text
from spheroid_hpo.tuning.worker import _load_trial_data

PARAMS = {"lr": 1e-3, "rotation": 5.0, "batch_size": 8}


def _keys(images: torch.Tensor) -> list[bytes]:
    """One key per image: its exact pixels (the demo images are all different)."""
    return [image.contiguous().cpu().numpy().tobytes() for image in images]


def _by_split(dataset) -> dict[str, set[bytes]]:
    return {split: set(_keys(getattr(dataset, split).images)) for split in ("train", "val", "test")}


class Spy:
    """Wraps ``module.name``, recording the keyword arguments of every call."""

    def __init__(self, monkeypatch, module, name: str):
        self.calls: list[dict] = []
        real = getattr(module, name)

        def spy(*args, **kwargs):
            self.calls.append(kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)


def test_a_train_run_trains_on_train_and_calibrates_on_validation_only(demo_dir, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    trained = Spy(monkeypatch, recipe_module.loop, "train")
    calibrated = Spy(monkeypatch, recipe_module, "calibrate")
    run_module.run_training(data_dir=data, out_dir=tmp_path / "run", arch="squeezenet1_1",
                            hyperparams=Hyperparams(epochs=1, **PARAMS), image_size=32, device="cpu",
                            progress=False)
    splits = _by_split(load_dataset(data, image_size=32, manifest_path=data / "splits.csv"))
    assert all(splits.values()) and not (splits["train"] & (splits["val"] | splits["test"]))
    (train,), (calibration,) = trained.calls, calibrated.calls
    assert set(_keys(train["train_images"])) == splits["train"]  # every training image, and only those
    assert set(_keys(train["val_images"])) == splits["val"]
    assert set(_keys(calibration["val_images"])) == splits["val"]  # the temperature is fitted on validation
    assert set(_keys(calibration["test_images"])) == splits["test"]  # test is only scored


def _trial(data, tmp_path, monkeypatch):
    """One trial of the objective on ``data``, with spies on what it trains and calibrates on."""
    trained = Spy(monkeypatch, objective_module.loop, "train")
    calibrated = Spy(monkeypatch, recipe_module, "calibrate")
    one_objective_trial(data, tmp_path, PARAMS)
    return trained.calls, calibrated.calls


def _study_data(demo_dir, tmp_path, *, folds: int | None, group_by: str | None = None):
    """What a worker decodes for a study (``_load_trial_data``), and the study's manifest."""
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    extra = (f"cv_folds = {folds}\n" if folds else "") + (f"group_by = '{group_by}'\n" if group_by else "")
    text = one_architecture_study().replace("[data]\n", f"[data]\n{extra}path = \"{data}\"\n")
    study_file = tmp_path / "s.toml"
    study_file.write_text(text)
    config = parse_study_text(text, source=study_file)
    runs = tmp_path / "runs"
    family = create_study_family(config=config, runs_dir=runs)
    trial_data = _load_trial_data(config, family.studies, data_dir=None, runs_dir=runs, device=torch.device("cpu"))
    manifest = runs / config.name / "splits.csv"
    return data, trial_data, manifest


def test_a_trial_without_folds_trains_on_train_and_validates_and_calibrates_on_val(demo_dir, tmp_path, monkeypatch):
    data, trial_data, manifest = _study_data(demo_dir, tmp_path, folds=None)
    splits = _by_split(load_dataset(data, image_size=32, manifest_path=manifest))
    trained, calibrated = _trial(trial_data, tmp_path, monkeypatch)
    (train,), (calibration,) = trained, calibrated
    assert set(_keys(train["train_images"])) == splits["train"]
    assert set(_keys(train["val_images"])) == set(_keys(calibration["val_images"])) == splits["val"]


def test_each_fold_trains_without_its_validation_images_and_no_test_image_reaches_a_fold(demo_dir, tmp_path,
                                                                                         monkeypatch):
    data, trial_data, manifest = _study_data(demo_dir, tmp_path, folds=3)
    splits = _by_split(load_dataset(data, image_size=32, manifest_path=manifest))
    trained, calibrated = _trial(trial_data, tmp_path, monkeypatch)
    assert len(trained) == 3
    validated = []
    for fold in trained:
        train, val = set(_keys(fold["train_images"])), set(_keys(fold["val_images"]))
        assert train and val and not train & val  # a fold never trains on the images it is scored on
        assert train | val == splits["train"] | splits["val"]  # and no test image is in either
        validated.append(val)
    assert set().union(*validated) == splits["train"] | splits["val"]  # each image validated once
    assert sum(map(len, validated)) == len(splits["train"] | splits["val"])
    (calibration,) = calibrated  # on the last fold's validation part, which that model never trained on
    assert set(_keys(calibration["val_images"])) == validated[-1]


def test_folds_keep_each_group_of_the_manifest_in_one_fold(demo_dir, tmp_path):
    _, trial_data, manifest = _study_data(demo_dir, tmp_path, folds=3, group_by=GROUP_BY)
    group_of = {row["path"]: row["group"] for row in read_manifest(manifest)}
    assert len(set(group_of.values())) > 3  # groups the folds could split
    folds_of_group: dict[str, set[int]] = {}
    for path, fold in zip(trial_data.train.paths + trial_data.val.paths, trial_data.folds):
        assert group_of[path] == re.search(GROUP_BY, path).group(1)
        folds_of_group.setdefault(group_of[path], set()).add(fold)
    assert len(set(trial_data.folds)) == 3
    assert all(len(folds) == 1 for folds in folds_of_group.values()), folds_of_group


def test_report_repeats_retrain_on_the_studys_split(monkeypatch, tmp_path):
    """Without the study's manifest each seed would draw a split of its own, with the study's test images in it."""
    params = {"epochs": 2, **PARAMS}
    family = SimpleNamespace(  # what repeat_best reads of a study family
        config=SimpleNamespace(training=SimpleNamespace(seed=0, weights="none", precision="fp32"),
                               data=SimpleNamespace(split=SplitSpec(seed=3), cv_folds=None)),
        data=SimpleNamespace(image_size=32), hyperparams=lambda trial: Hyperparams.from_params(params),
    )
    calls = []

    def training(**kwargs):
        calls.append(kwargs)
        return SimpleNamespace(test_macro_f1=0.5, val_macro_f1=0.5, history=())

    monkeypatch.setattr(repeats_module, "run_training", training)
    manifest = tmp_path / "splits.csv"
    repeats_module.repeat_best(family, {"squeezenet1_1": SimpleNamespace(number=0)}, data_dir=tmp_path,
                               manifest_path=manifest, repeats=2, device="cpu")
    assert len(calls) == 2 and all(call["split"].manifest == str(manifest) for call in calls)
    assert [call["seed"] for call in calls] == [0, 1]
