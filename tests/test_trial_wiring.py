"""What a trial and a worker decide, checked in-process on tiny data: the split a trial is
judged on, the options that reach its model, the pruner and sampler a study file names,
and a worker that goes on past a failing trial."""

from __future__ import annotations

import csv
import re
from functools import partial
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import TrialState
from sklearn.metrics import f1_score
from split_manifests import write_uneven_manifest
from study_files import one_architecture_study, write_one_architecture_study
from torch import nn
from typer.testing import CliRunner
from waiting import wait_for

import spheroid_hpo.tuning.worker as worker_module
from spheroid_hpo.cli import app
from spheroid_hpo.data import TrainingData, load_dataset
from spheroid_hpo.results.report import report_output_names
from spheroid_hpo.training import inference, loop
from spheroid_hpo.training.saved_model import load_model
from spheroid_hpo.tuning.create import create_study_family
from spheroid_hpo.tuning.objective import build_objective
from spheroid_hpo.tuning.records import budget_used
from spheroid_hpo.tuning.studies import load_studies
from spheroid_hpo.tuning.study_file import parse_study_text
from spheroid_hpo.tuning.worker import run_worker

# --- The objective: judged on the validation split, with the study's options ------------------------------


def objective_on_an_uneven_split(demo_dir: Path, folder: Path, *, architecture: str, extra_space: str = "",
                                 weights: str = "none", precision: str = "fp32", epochs: int | str = 1):
    """``build_objective`` for one architecture on an uneven split: (objective, store, manifest, dataset)."""
    manifest = folder / "splits.csv"
    write_uneven_manifest(demo_dir, manifest)
    dataset = load_dataset(demo_dir, image_size=32, manifest_path=manifest, splits=("train", "val"))
    config = parse_study_text(one_architecture_study(architecture=architecture, extra_space=extra_space,
                                                     epochs=epochs), source=Path("wiring.toml"))
    store = FileSystemArtifactStore(str(folder / "artifacts"))
    (folder / "artifacts").mkdir()
    objective = build_objective(
        architecture=architecture,
        data=TrainingData(train=dataset.train, val=dataset.val, class_names=dataset.class_names, image_size=32),
        search_space=config.search_space, device=torch.device("cpu"), artifact_store=store,
        checkpoint_dir=folder / "checkpoints", precision=precision, weights=weights,
    )
    return objective, store, manifest, dataset


def run_one_trial(demo_dir: Path, folder: Path, *, architecture: str, params: dict, extra_space: str = ""):
    """One trial of ``params`` through ``build_objective`` on in-memory storage, on an uneven split."""
    objective, store, manifest, dataset = objective_on_an_uneven_split(
        demo_dir, folder, architecture=architecture, extra_space=extra_space)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(params)
    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    model_file = folder / "model.pt"
    download_artifact(artifact_store=store, file_path=str(model_file),
                      artifact_id=trial.user_attrs["model_artifact_id"])
    return trial, model_file, manifest, dataset


def test_a_trial_whose_model_cannot_be_built_fails_and_records_why(demo_dir, tmp_path):
    """The weights file passed the worker's check, then went away before the trial built its model."""
    gone = tmp_path / "gone.pt"
    objective, *_ = objective_on_an_uneven_split(demo_dir, tmp_path, architecture="squeezenet1_1",
                                                 weights=str(gone))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"epochs": 1, "lr": 2e-3, "rotation": 10.0, "batch_size": 8})
    study.optimize(objective, n_trials=1, catch=(Exception,))
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"].startswith("InputError: weights file")
    assert str(gone) in trial.user_attrs["fail_reason"]


def test_a_trials_validation_scores_are_its_model_on_the_manifests_validation_split(demo_dir, tmp_path):
    params = {"epochs": 1, "lr": 2e-3, "rotation": 10.0, "batch_size": 8}
    trial, model_file, manifest, _ = run_one_trial(demo_dir, tmp_path, architecture="squeezenet1_1", params=params)

    # Recomputed independently: the saved model on the manifest's validation images, scored by scikit-learn.
    model, info = load_model(model_file)
    val = load_dataset(demo_dir, image_size=32, manifest_path=manifest, splits=("val",)).val
    with open(manifest, newline="") as handle:
        val_paths = [row["path"] for row in csv.DictReader(handle) if row["split"] == "val"]
    assert sorted(val.paths) == sorted(val_paths)
    predicted = inference.predict_logits(model, val.images, mean=info.mean, std=info.std).argmax(1).numpy()
    expected = f1_score(val.labels.numpy(), predicted, labels=[0, 1, 2, 3], average=None, zero_division=0)
    np.testing.assert_allclose(trial.user_attrs["val_f1_per_class"], expected, atol=1e-6)
    # The trial's value is the last epoch's validation macro-F1: the same model on the same split.
    assert trial.value == pytest.approx(float(np.mean(expected)), abs=1e-6)
    assert trial.user_attrs["val_accuracy"] == pytest.approx(float(np.mean(predicted == val.labels.numpy())))


@pytest.mark.parametrize("architecture", ["squeezenet1_1", "mobilenet_v3_large"])
def test_a_trial_records_the_precision_auto_resolved_to(demo_dir, tmp_path, architecture):
    """Recorded resolved, so export-best and reproduce train in it on any machine (not what "auto" picks there)."""
    objective, *_ = objective_on_an_uneven_split(demo_dir, tmp_path, architecture=architecture, precision="auto")
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"epochs": 1, "lr": 2e-3, "rotation": 10.0, "batch_size": 8})
    study.optimize(objective, n_trials=1)
    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    # MobileNet V3's depthwise convolutions stay fp32 (resolve_precision says why).
    expected = "bf16" if native_bf16 and architecture == "squeezenet1_1" else "fp32"
    assert study.trials[0].user_attrs["precision"] == expected


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_a_lagging_trial_is_pruned_before_its_last_epoch_never_after_it(demo_dir, tmp_path):
    """Pruning after the last epoch saves nothing: that trial completes and its value reaches the sampler."""
    # epochs searched, so each enqueued trial trains its own count (a fixed `epochs = 1` gave both one epoch)
    objective, *_ = objective_on_an_uneven_split(demo_dir, tmp_path, architecture="squeezenet1_1",
                                                 epochs="{ low = 1, high = 2 }")
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    study.enqueue_trial({"epochs": 2, "lr": 2e-3, "rotation": 10.0, "batch_size": 8})
    study.enqueue_trial({"epochs": 1, "lr": 2e-3, "rotation": 10.0, "batch_size": 8})
    study.optimize(objective, n_trials=2)
    pruned, complete = study.trials
    assert pruned.state == TrialState.PRUNED and sorted(pruned.intermediate_values) == [1]
    assert complete.state == TrialState.COMPLETE and sorted(complete.intermediate_values) == [1]


def test_a_searched_bn_momentum_reaches_the_trained_model(demo_dir, tmp_path, monkeypatch):
    from spheroid_hpo.training import recipe as recipe_module

    built: list[nn.Module] = []
    real_create_model = recipe_module.create_model

    def recording_create_model(*args, **kwargs):
        built.append(real_create_model(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(recipe_module, "create_model", recording_create_model)
    params = {"epochs": 1, "lr": 1e-3, "rotation": 0.0, "batch_size": 8, "bn_momentum": 0.037}
    trial, model_file, _, _ = run_one_trial(
        demo_dir, tmp_path, architecture="resnet18", params=params,
        extra_space="bn_momentum = { low = 0.001, high = 0.1, log = true }",
    )
    assert trial.params["bn_momentum"] == 0.037
    (trained,) = built
    momenta = {layer.momentum for layer in trained.modules() if isinstance(layer, nn.BatchNorm2d)}
    assert momenta == {0.037}
    assert torch.load(model_file, weights_only=True)["bn_momentum"] == 0.037


# --- The study file's pruner and sampler, as the worker loads them ------------------------------------------


def lagging_trials_pruned(pruner: str) -> tuple[optuna.pruners.BasePruner, int]:
    """Run 12 synthetic trials, each worse than the last at every epoch; return the pruner and how many it pruned."""
    config = parse_study_text(one_architecture_study(pruner=pruner, epochs=9, sampler="random"), source=Path("p.toml"))
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name=config.study_name("squeezenet1_1"), storage=storage, direction="maximize")
    (study,) = load_studies(config, storage).values()

    def lagging(trial: optuna.Trial) -> float:
        for epoch in range(1, 10):
            trial.report(1.0 - 0.05 * trial.number + 0.01 * epoch, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 1.0 - 0.05 * trial.number + 0.09

    study.optimize(lagging, n_trials=12)
    return study.pruner, sum(t.state == TrialState.PRUNED for t in study.trials)


@pytest.mark.parametrize(("name", "kind"), [
    ("median", optuna.pruners.MedianPruner),
    ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
    ("hyperband", optuna.pruners.HyperbandPruner),
])
def test_each_pruner_a_study_file_names_is_the_one_that_prunes(name, kind):
    pruner, pruned = lagging_trials_pruned(name)
    assert type(pruner) is kind
    assert pruned >= 3
    if name == "hyperband":
        assert pruner._max_resource == 9  # the study's largest epoch count


def test_no_pruner_prunes_nothing():
    pruner, pruned = lagging_trials_pruned("none")
    assert isinstance(pruner, optuna.pruners.NopPruner) and pruned == 0


# --- A worker process's loop, in-process -------------------------------------------------------------------


def test_a_failing_trial_is_recorded_with_its_reason_and_the_worker_goes_on(tmp_path, monkeypatch):
    study_file = write_one_architecture_study(tmp_path, name="failing", n_trials=2)
    runs = tmp_path / "runs"
    family = create_study_family(config=parse_study_text(study_file.read_text(), source=study_file), runs_dir=runs)
    real_train = loop.train
    calls = []

    def out_of_memory_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(loop, "train", out_of_memory_once)
    previous_threads = torch.get_num_threads()
    threads = 2 if previous_threads == 1 else 1  # not what the process has already (OMP_NUM_THREADS=1 or not)
    try:
        summary = run_worker(study="failing", storage_url=family.storage_url, runs_dir=runs, device="cpu",
                             threads=threads)
    finally:
        torch.set_num_threads(previous_threads)

    trials = optuna.load_study(study_name="failing.squeezenet1_1", storage=family.storage_url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == "RuntimeError: CUDA out of memory (simulated)"
    # A failed trial that nobody retries counts against the budget: two trials, then the worker stops.
    assert summary.trials_run == 2 and budget_used(trials) == 2
    assert trials[1].user_attrs["torch_threads"] == threads  # --threads reached the trial


def test_a_worker_starts_no_trial_after_its_timeout(tmp_path, monkeypatch):
    study_file = write_one_architecture_study(tmp_path, name="timeout", n_trials=2)
    runs = tmp_path / "runs"
    family = create_study_family(config=parse_study_text(study_file.read_text(), source=study_file), runs_dir=runs)
    # The smallest timeout a worker takes is 1 s; its clock jumps 2 s per reading, so it has always run out.
    ticks = iter(range(0, 10**6, 2))
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: float(next(ticks)))
    # A trial that starts fails at once instead of training (its worker goes on, and it is counted below).
    monkeypatch.setattr(loop, "train", lambda *args, **kwargs: pytest.fail("a trial started after the timeout"))
    summary = run_worker(study="timeout", storage_url=family.storage_url, runs_dir=runs, device="cpu",
                         timeout=1)
    assert summary.trials_run == 0
    assert optuna.load_study(study_name="timeout.squeezenet1_1", storage=family.storage_url).trials == []


# --- report --repeats, end to end --------------------------------------------------------------------------


def test_report_repeats_retrains_the_best_configuration_with_each_seed(tmp_path):
    study_file = write_one_architecture_study(tmp_path, name="repeats", n_trials=1)
    runs = tmp_path / "runs"
    family = create_study_family(config=parse_study_text(study_file.read_text(), source=study_file), runs_dir=runs)
    assert run_worker(study="repeats", storage_url=family.storage_url, runs_dir=runs, device="cpu").trials_run == 1
    out = tmp_path / "report"

    result = CliRunner().invoke(app, ["report", "--study", "repeats", "--storage", family.storage_url,
                                      "--runs-dir", str(runs), "--out", str(out), "--repeats", "2",
                                      "--device", "cpu"])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    # Every registered output is written, and the command names each.
    assert all((out / name).is_file() and name in result.output for name in report_output_names()), result.output

    markdown = (out / "report.md").read_text()
    assert "Each architecture's best configuration retrained with seeds 0, 1 on the study's split" in markdown
    assert re.search(r"\| squeezenet1_1 \| #0 \| 2 \| \d\.\d{3} ± \d\.\d{3} \|", markdown), markdown
    # The reporting checklist is part of the report, not only of checklist.json.
    assert "## Reporting checklist (DOME)" in markdown
    assert "Reporting checklist (DOME)</h2>" in (out / "report.html").read_text()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_worker_retries_a_silent_trial_three_times_and_counts_it_once(tmp_path):
    """A trial whose heartbeat stops is failed and queued again by the worker's loop, at most three times."""
    from spheroid_hpo.tuning.storage import open_storage
    from spheroid_hpo.tuning.worker import next_architecture

    study_file = write_one_architecture_study(tmp_path, name="silent", n_trials=5)
    config = parse_study_text(study_file.read_text(), source=study_file)
    family = create_study_family(config=config, runs_dir=tmp_path / "runs")
    storage = open_storage(family.storage_url, heartbeat_interval=1, grace_period=1)
    studies = load_studies(config, storage)
    study = studies["squeezenet1_1"]
    def failed_as_stale(number: int) -> bool:
        # The worker's loop fails a trial whose heartbeat is older than the grace period, and queues it again.
        return (next_architecture(studies) == "squeezenet1_1"
                and study.get_trials(deepcopy=False)[number].state == TrialState.FAIL)

    for _ in range(4):
        claimed = study.ask()  # the queued retry when there is one, else a new trial
        storage.record_heartbeat(claimed._trial_id)
        # Then silence: the worker died. Polled, not a fixed sleep: done as soon as the grace period is past.
        wait_for(partial(failed_as_stale, claimed.number), timeout=120, interval=0.2,
                 what=f"trial {claimed.number} to be failed as stale",
                 explain=lambda: str([(t.number, t.state.name) for t in study.get_trials(deepcopy=False)]))

    trials = study.get_trials()
    # One trial run four times: the first attempt and three retries, after which none is queued.
    assert [t.state for t in trials] == [TrialState.FAIL] * 4
    assert trials[0].params == trials[1].params == trials[2].params == trials[3].params
    assert [t.system_attrs.get("failed_trial") for t in trials] == [None, 0, 0, 0]
    assert budget_used(trials) == 1  # the retried failures count once
