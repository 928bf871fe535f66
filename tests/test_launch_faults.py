"""`launch` and its workers on a bad machine: a full disk, a read-only runs folder, a damaged study.db,
a process limit, more workers than cores. Each gives one line (exit 2) and loses nothing finished.

The review of issue 26 found tracebacks for each (a full disk: 106 lines ending in Optuna's
"Should not reach", an empty worker log, and "see the logs"). Real files, real SQLite, real
child processes; only the process limit is simulated (root ignores ``ulimit -u``).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from rich.console import Console

from spheroid_hpo.cli import main
from spheroid_hpo.errors import InputError
from spheroid_hpo.tuning import launch as launch_module
from spheroid_hpo.tuning.launch import LaunchSummary, check_worker_count, claim_worker_logs, print_launch_summary
from spheroid_hpo.tuning.storage import fault_message, open_storage
from spheroid_hpo.tuning.study_file import load_study_config
from spheroid_hpo.tuning.worker_output import WorkerOutput

STUDY = """
[study]
name = "faults"
architectures = ["squeezenet1_1"]
n_trials = 1

[search_space]
epochs = 1
lr = 1e-3
rotation = 10.0
batch_size = 4

[pruner]
name = "none"

[data]
image_size = 32

[data.demo]
per_class = 6
size = 32
"""


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    """``spheroid-hpo ARGS`` through the console-script entry point: (exit code, non-empty stderr lines)."""
    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    code = exit_info.value.code
    return (0 if code is None else code), [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def study_file(folder: Path) -> Path:
    path = folder / "faults.toml"
    path.write_text(STUDY)
    return path


# --- a damaged study.db --------------------------------------------------------------------------------


def test_a_page_corrupted_study_db_is_one_line(tmp_path, monkeypatch, capsys):
    """The review overwrote 8 kB at offset 8192: report, worker, export and dashboard gave tracebacks."""
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    assert run_cli(monkeypatch, capsys, "create", "--study", str(study_file(tmp_path)), "--runs-dir", str(runs))[0] == 0
    database = runs / "faults" / "study.db"
    with open(database, "r+b") as handle:
        handle.seek(8192)
        handle.write(b"\xde\xad\xbe\xef" * 2048)
    for command in (("report", "--study", "faults"), ("worker", "--study", "faults")):
        code, lines = run_cli(monkeypatch, capsys, *command, "--storage", f"sqlite:///{database}",
                              "--runs-dir", str(runs))
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("error: the SQLite storage file is damaged (database disk image is malformed)")


# --- a full disk ---------------------------------------------------------------------------------------


def test_a_storage_that_is_full_under_optuna_is_one_line(tmp_path):
    """SQLite's own "database or disk is full" (a page limit stands in for the disk), as Optuna wraps it."""
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=None)
    study = optuna.create_study(storage=storage, study_name="full")
    with storage.engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar()

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _no_room(dbapi_connection, _record):
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    storage.engine.dispose()
    with pytest.raises(BaseException) as raised:  # noqa: PT011 -- Optuna's own wrapping is what is tested
        study.optimize(lambda trial: trial.set_user_attr("big", "x" * 200_000) or 0.0, n_trials=1)
    message = fault_message(raised.value)
    assert message is not None and message.startswith("no space left on the disk"), repr(raised.value)
    assert fault_message(OSError(28, "No space left on device", "runs/x/checkpoint.pt")).startswith(
        "no space left on the disk (runs/x/checkpoint.pt)")
    assert fault_message(ValueError("something else")) is None


def test_a_workers_error_line_survives_a_log_on_a_full_disk():
    """/dev/full refuses every write with ENOSPC, like the review's full 5 MB tmpfs."""
    worker = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('epoch 1'); print('error: no space left on the disk', "
                               "file=sys.stderr); sys.exit(2)"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    output = WorkerOutput(worker.stdout, Path("/dev/full"))
    assert worker.wait(timeout=60) == 2
    assert output.finish() == "no space left on the disk"


def test_the_launcher_says_why_each_worker_failed_in_one_line(tmp_path):
    (tmp_path / "worker-1.log").write_text("loading\nTraceback ...\nRuntimeError: boom\n")
    summary = LaunchSummary(
        study_name="faults", storage_url="sqlite:///x.db", artifact_dir=tmp_path, log_dir=tmp_path, progress=[],
        worker_exit_codes=[2, 1], worker_logs=[tmp_path / "worker-0.log", tmp_path / "worker-1.log"],
        worker_errors=["no space left on the disk", None], interrupted=False, seconds=1.0,
    )
    out = io.StringIO()
    assert print_launch_summary(summary, Console(file=out, width=80)) == 1
    (line,) = [line for line in out.getvalue().splitlines() if line.startswith("error:")]
    assert "worker-0.log: no space left on the disk" in line
    assert "worker-1.log: exit code 1, last line: RuntimeError: boom" in line


# --- the runs folder cannot be written ------------------------------------------------------------------


def test_a_read_only_runs_folder_is_one_line(tmp_path, monkeypatch, capsys):
    """Root ignores permission bits, so as root the folder is a read-only tmpfs, as in the review."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True).returncode == 0
    if not mounted:
        folder.chmod(0o555)
    try:
        code, lines = run_cli(monkeypatch, capsys, "launch", "--study", str(study_file(tmp_path)),
                              "--runs-dir", str(folder / "runs"))
    finally:
        subprocess.run(["umount", str(folder)], check=True) if mounted else folder.chmod(0o755)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: cannot write in --runs-dir {folder / 'runs'}: ")
    assert "Read-only file system" in lines[0] or "Permission denied" in lines[0]


# --- worker counts and the process limit -----------------------------------------------------------------


def test_worker_counts_above_the_cores_warn_and_absurd_ones_are_refused():
    out = io.StringIO()
    check_worker_count(2, console=Console(file=out), cpu_count=2)
    assert out.getvalue() == ""
    check_worker_count(3, console=Console(file=out, width=300), cpu_count=2)
    assert out.getvalue().startswith("warning: 3 workers share 2 CPU cores")
    check_worker_count(8, console=Console(file=io.StringIO()), cpu_count=2)
    with pytest.raises(InputError, match=r"^--workers must be from 1 to 8 \(4 per CPU core, 2 cores here\), "
                                         r"but got 9"):
        check_worker_count(9, console=Console(file=io.StringIO()), cpu_count=2)


def test_a_worker_that_cannot_be_started_is_one_line_and_stops_the_others(tmp_path, monkeypatch):
    """Under ``ulimit -u`` the review's launch died in a BlockingIOError traceback after 22 workers."""
    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def limited_popen(command, **options):
        if started:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        started.append(real_popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        return started[-1]

    monkeypatch.setattr(launch_module.subprocess, "Popen", limited_popen)
    config = load_study_config(study_file(tmp_path))
    with pytest.raises(InputError, match=r"^could not start worker 2 of 2: Resource temporarily unavailable"):
        launch_module.launch(config=config, workers=2, runs_dir=tmp_path / "runs", console=Console(file=io.StringIO()))
    (first,) = started
    assert first.wait(timeout=90) == -signal.SIGTERM  # the started worker was stopped, not left running


# --- distinct worker indexes and logs ------------------------------------------------------------------


def test_launches_at_once_and_relaunches_claim_distinct_worker_indexes_and_logs(tmp_path):
    claims: list[list[tuple[int, Path]]] = []
    threads = [threading.Thread(target=lambda: claims.append(claim_worker_logs(tmp_path, 3))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    indexes = [index for claim in claims for index, _ in claim]
    assert sorted(indexes) == list(range(12))  # four launches of 3 workers at once: no index twice
    assert all(path == tmp_path / f"worker-{index}.log" for claim in claims for index, path in claim)
    (tmp_path / "worker-0.log").write_text("an earlier launch's traceback\n")
    assert claim_worker_logs(tmp_path, 1) == [(12, tmp_path / "worker-12.log")]  # a relaunch keeps old logs
    assert (tmp_path / "worker-0.log").read_text() == "an earlier launch's traceback\n"
