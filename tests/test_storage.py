"""The SQLite storage under concurrent worker processes, and storage URLs."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from spheroid_hpo.errors import InputError
from spheroid_hpo.tuning.storage import masked_url, open_storage
from spheroid_hpo.tuning.workspace import Workspace

TRIALS_PER_WORKER = 30
WORKERS = 4
QUEUED = 20


def _short_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    for step in range(3):
        trial.report(x * step, step)
    trial.set_user_attr("claimed_by", multiprocessing.current_process().name)
    time.sleep(0.005)
    return x * x


def _run_worker(url: str, index: int) -> None:
    storage = open_storage(url, heartbeat_interval=5)
    study = optuna.load_study(study_name="stress", storage=storage, sampler=optuna.samplers.RandomSampler(seed=index))
    study.optimize(_short_objective, n_trials=TRIALS_PER_WORKER)


@pytest.mark.slow
def test_four_worker_processes_share_sqlite_without_lock_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'stress.db'}"
    study = optuna.create_study(study_name="stress", storage=open_storage(url, heartbeat_interval=None))
    for i in range(QUEUED):
        study.enqueue_trial({"x": float(i) / 10})

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_run_worker, args=(url, i), name=f"w{i}") for i in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [worker.exitcode for worker in workers] == [0] * WORKERS  # no "database is locked" raised

    trials = optuna.load_study(study_name="stress", storage=url).trials
    assert len(trials) == WORKERS * TRIALS_PER_WORKER >= 100
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(len(t.intermediate_values) == 3 and "claimed_by" in t.user_attrs for t in trials)
    # Every queued trial ran exactly once: no two workers claimed the same one.
    queued = sorted(t.params["x"] for t in trials[:QUEUED])
    assert queued == [float(i) / 10 for i in range(QUEUED)]
    assert len({t.user_attrs["claimed_by"] for t in trials}) == WORKERS


def test_sqlite_storage_uses_write_ahead_logging(tmp_path):
    import sqlite3

    path = tmp_path / "sub" / "study.db"
    open_storage(f"sqlite:///{path}")
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_workspace_lays_out_the_study_folder_and_given_folders_win():
    default = Workspace.of("paper")
    assert default.storage_url == "sqlite:///runs/paper/study.db"
    assert (default.artifact_dir, default.checkpoints) == (Path("runs/paper/artifacts"), Path("runs/paper/checkpoints"))
    assert (default.manifest, default.logs, default.report) == (
        Path("runs/paper/splits.csv"), Path("runs/paper/logs"), Path("runs/paper/report"))
    shared = Workspace.of("paper", runs_dir=Path("/lab/runs"), storage_url="postgresql+psycopg://db/hpo",
                          artifact_dir=Path("/shared/artifacts"))
    assert shared.storage_url == "postgresql+psycopg://db/hpo"
    assert shared.checkpoints == Path("/shared/checkpoints")  # beside the artifacts every worker shares
    assert shared.manifest == Path("/lab/runs/paper/splits.csv")


def test_masked_url_hides_the_password():
    assert masked_url("postgresql+psycopg://lab:s3cret@db:5432/hpo") == "postgresql+psycopg://lab:***@db:5432/hpo"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "is not a database URL"),
        ("oracle://user@host/db", "unknown database 'oracle'"),
        ("postgresql+nodriver://u:pw@127.0.0.1/db", "names driver 'postgresql+nodriver'"),
        ("sqlite:////proc/forbidden/study.db", "cannot open SQLite storage"),
    ],
)
def test_bad_storage_urls_are_one_clear_error(url, fragment):
    with pytest.raises(InputError) as error:
        open_storage(url)
    assert fragment in str(error.value)
    assert "pw" not in str(error.value)
