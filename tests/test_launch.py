"""The tuning service end to end: real launcher, real worker processes, a real SQLite file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from study_files import write_tiny_study

from spheroid_hpo.tuning.records import budget_used

# `launch --workers 2` run to the end of a budget, and launched again: CI runs these, the default run
# leaves them out (its finished_study fixture launches one worker process).
pytestmark = pytest.mark.slow

ARCHITECTURES = ("squeezenet1_1", "resnet18")


def cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spheroid_hpo", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=env,
    )


def load(storage_url: str, name: str, architecture: str) -> optuna.Study:
    return optuna.load_study(study_name=f"{name}.{architecture}", storage=storage_url)


@pytest.fixture(scope="module")
def two_worker_launch(tmp_path_factory):
    """`spheroid-hpo launch --workers 2` on the tiny study, run to the end of its budget."""
    folder = tmp_path_factory.mktemp("launch")
    study = write_tiny_study(folder, name="two", n_trials=5, pruner="median")
    result = cli("launch", "--workers", "2", "--study", str(study), "--runs-dir", "runs", cwd=folder)
    return folder, study, result


def test_launch_with_two_workers_spends_the_budget(two_worker_launch):
    folder, _, result = two_worker_launch
    assert result.returncode == 0, result.stdout + result.stderr
    url = f"sqlite:///{folder / 'runs' / 'two' / 'study.db'}"
    states = []
    for architecture in ARCHITECTURES:
        trials = load(url, "two", architecture).get_trials()
        # Workers check the budget before claiming a trial, so two that claim in the same
        # instant can run one trial past it (at most workers - 1); never fewer.
        assert 5 <= budget_used(trials) <= 5 + 1
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        assert any(t.state == TrialState.COMPLETE for t in trials)
        # The paper's original configuration runs first in every study.
        assert trials[0].user_attrs.get("baseline") is True
        assert trials[0].params == {"epochs": 3, "lr": 1e-3, "rotation": 10.0, "batch_size": 12}
        # What the pruner decided, whichever trials it met: a pruned trial stopped before its
        # epochs, and a complete one trained them all (which trials race is the scheduler's).
        for trial in trials:
            epochs = sorted(trial.intermediate_values)
            if trial.state == TrialState.PRUNED:
                assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) < trial.params["epochs"]
            else:
                assert epochs == list(range(1, trial.params["epochs"] + 1))
        states += [t.state for t in trials]
    # Both worker processes ran, and between them ran every trial.
    logs = sorted((folder / "runs" / "two" / "logs").glob("worker-*.log"))
    assert len(logs) == 2
    assert all("ran " in log.read_text() for log in logs)
    ran = [int(log.read_text().rsplit("ran ", 1)[1].split()[0]) for log in logs]
    assert sum(ran) == len(states)


def test_launch_prints_progress_and_where_results_are(two_worker_launch):
    _, _, result = two_worker_launch
    out = result.stdout + result.stderr
    for architecture in ARCHITECTURES:
        assert architecture in out
    assert "best F1" in out
    assert "spheroid-hpo dashboard --storage sqlite:///" in out
    assert "spheroid-hpo report" in out
    assert "results: storage" in out


def test_completed_trials_store_attributes_and_artifacts(two_worker_launch):
    folder, _, _ = two_worker_launch
    url = f"sqlite:///{folder / 'runs' / 'two' / 'study.db'}"
    study = load(url, "two", "squeezenet1_1")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    artifacts_dir = folder / "runs" / "two" / "artifacts"
    for trial in complete:
        assert len(trial.user_attrs["val_f1_per_class"]) == 4
        assert 0 <= trial.user_attrs["val_accuracy"] <= 1
        assert trial.user_attrs["parameter_count"] > 100_000
        assert trial.user_attrs["device"] == "cpu"
        assert trial.user_attrs["wall_time_seconds"] > 0
        # The value is the validation macro-F1 of the last epoch.
        assert trial.value == trial.intermediate_values[max(trial.intermediate_values)]
        names = {meta.filename for meta in optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)}
        assert names == {"history.csv", "curves.png", "confusion.png", "model.pt"}
        assert (artifacts_dir / trial.user_attrs["model_artifact_id"]).stat().st_size > 100_000
    for trial in study.trials:
        assert "test" not in " ".join(trial.user_attrs)  # trials never look at the test split


def test_relaunch_resumes_without_repeating_finished_trials(two_worker_launch):
    folder, study, _ = two_worker_launch
    url = f"sqlite:///{folder / 'runs' / 'two' / 'study.db'}"
    before = {a: [(t.number, t.state, t.value) for t in load(url, "two", a).trials] for a in ARCHITECTURES}
    result = cli("launch", "--workers", "1", "--study", str(study), "--runs-dir", "runs", "--n-trials", "6", cwd=folder)
    assert result.returncode == 0, result.stderr
    for architecture in ARCHITECTURES:
        trials = load(url, "two", architecture).trials
        assert [(t.number, t.state, t.value) for t in trials[: len(before[architecture])]] == before[architecture]
        assert budget_used(trials) >= 6
        assert sum(1 for t in trials if t.user_attrs.get("baseline")) == 1  # not enqueued again


def test_a_worker_refuses_data_that_differs_from_the_study(two_worker_launch, tmp_path):
    folder, _, _ = two_worker_launch
    other = tmp_path / "other"
    from spheroid_hpo.data.demo import write_demo_data

    write_demo_data(other, per_class=12, size=32, seed=1)  # same file names, other pixels
    url = f"sqlite:///{folder / 'runs' / 'two' / 'study.db'}"
    result = cli("worker", "--storage", url, "--study", "two", "--data", str(other),
                 "--runs-dir", str(tmp_path / "runs"), cwd=folder)
    assert result.returncode == 2
    assert "differs from the data study two was created on" in result.stderr
    assert "Traceback" not in result.stderr
