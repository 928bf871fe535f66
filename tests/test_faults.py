"""Faults a long search meets: a worker killed mid-trial, Ctrl-C on the launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from waiting import wait_for

# Real launches killed and interrupted mid-trial, 30 to 40 epochs each: CI runs them, the default run
# leaves them out (the default run's finished_study fixture still launches a real worker process).
pytestmark = pytest.mark.slow

FAULT_STUDY = """
[study]
name = "{name}"
architectures = ["squeezenet1_1"]
n_trials = {n_trials}

[search_space]
epochs = {epochs}
lr = 1e-3
rotation = 10.0
batch_size = 12

[pruner]
name = "none"

[data]
image_size = 32

[data.demo]
per_class = 12
size = 32
"""


def write_study(folder: Path, *, name: str, n_trials: int, epochs: int) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(FAULT_STUDY.format(name=name, n_trials=n_trials, epochs=epochs))
    return path


def _ctrl_c_as_at_a_terminal() -> None:
    # A shell without job control starts `cmd &` with SIGINT ignored, and children inherit that:
    # pytest run that way (CI scripts, nohup) would start a launcher deaf to Ctrl-C. At a terminal,
    # Ctrl-C reaches the launcher, so give it SIGINT's default action back, as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spheroid_hpo(*args: str, cwd: Path) -> subprocess.Popen:
    """The CLI in a new process, its output in ``cwd/launcher.log`` for the failure messages."""
    with (cwd / "launcher.log").open("w") as log:
        return subprocess.Popen([sys.executable, "-m", "spheroid_hpo", *args], cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=_ctrl_c_as_at_a_terminal)


def worker_pids(runs_dir: Path) -> list[int]:
    """Worker processes whose command line names this test's runs folder."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in command and str(runs_dir).encode() in command:
            pids.append(int(entry.name))
    return pids


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"({error})"


def what_happened(url: str, study_name: str) -> str:
    """The trials, the launcher's output and each worker's log: what a timed-out wait shows."""
    database = Path(url.removeprefix("sqlite:///"))
    parts = []
    try:
        trials = optuna.load_study(study_name=study_name, storage=url).get_trials(deepcopy=False)
        parts.append("trials: " + "; ".join(
            f"#{t.number} {t.state.name} {len(t.intermediate_values)} epochs" for t in trials) or "none")
    except Exception as error:  # the diagnosis must not hide the failure it explains
        parts.append(f"trials: ({type(error).__name__}: {error})")
    for log in [database.parent.parent.parent / "launcher.log", *sorted((database.parent / "logs").glob("*.log"))]:
        parts.append(f"--- {log.name}:\n{tail(log)}")
    return "\n".join(parts)


def wait_for_running_epochs(url: str, study_name: str, epochs: int, *, launcher: subprocess.Popen,
                            timeout: float) -> None:
    """Wait until a RUNNING trial of ``study_name`` has reported ``epochs`` epochs.

    Fails at once, saying what happened, when the launcher exits first: its trials failed,
    or finished before a poll saw one running.
    """
    database = Path(url.removeprefix("sqlite:///"))
    explain = lambda: what_happened(url, study_name)  # noqa: E731
    # The launcher starts its workers (each with a log file) only after it has created the
    # storage, switched it to WAL and created the studies. A poll that opened the file before
    # then created the tables itself, in rollback-journal mode, and its reads every 50 ms
    # starved the launcher's switch to WAL until SQLite's 120 s busy timeout (CI, 2026-12-01).
    first_worker_log = database.parent / "logs" / "worker-0.log"
    wait_for(lambda: first_worker_log.exists() or launcher.poll() is not None, timeout=timeout,
             what=f"{first_worker_log} to be created", explain=explain, interval=0.05)
    storage = optuna.storages.RDBStorage(url)

    def reported() -> bool:
        try:
            trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
        except KeyError:  # the launcher has not created the study yet
            trials = []
        if any(len(t.intermediate_values) >= epochs for t in trials if t.state == TrialState.RUNNING):
            return True
        if launcher.poll() is not None:
            raise AssertionError(f"the launcher exited ({launcher.returncode}) before a running trial reported "
                                 f"{epochs} epochs\n{explain()}")
        return False

    wait_for(reported, timeout=timeout, what=f"{epochs} epochs of a running trial", explain=explain, interval=0.05)


# Trials long enough that a poll cannot miss the moment to kill or stop one: about 0.2 s an
# epoch on 2 idle cores, so 37 epochs (7 s) to catch the trial in. With 20 epochs (3.5 s)
# a poll on a loaded CI machine missed them once and waited out its timeout.
KILL_EPOCHS = 40
STOP_EPOCHS = 30


def test_killed_worker_trial_is_retried_and_resumes_from_its_checkpoint(tmp_path):
    study_file = write_study(tmp_path, name="kill", n_trials=1, epochs=KILL_EPOCHS)
    runs = tmp_path / "runs"
    url = f"sqlite:///{runs / 'kill' / 'study.db'}"
    launcher = spheroid_hpo("launch", "--workers", "1", "--study", str(study_file), "--runs-dir", str(runs),
                            "--heartbeat-interval", "1", cwd=tmp_path)
    try:
        wait_for_running_epochs(url, "kill.squeezenet1_1", 3, launcher=launcher, timeout=300)
        (pid,) = worker_pids(runs)
        os.kill(pid, signal.SIGKILL)
        launcher.wait(timeout=60)
    finally:
        launcher.kill()
    study = optuna.load_study(study_name="kill.squeezenet1_1", storage=url)
    (killed,) = study.trials
    assert killed.state == TrialState.RUNNING  # nobody has noticed yet
    epochs_before_kill = len(killed.intermediate_values)

    # A new worker notices the silent heartbeat, fails the trial and runs its retry.
    result = subprocess.run(
        [sys.executable, "-m", "spheroid_hpo", "worker", "--study", "kill", "--storage", url,
         "--runs-dir", str(runs), "--heartbeat-interval", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,  # 37 epochs left took 300 s at load 5 on 2 cores
    )
    assert result.returncode == 0, result.stdout + result.stderr
    trials = optuna.load_study(study_name="kill.squeezenet1_1", storage=url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.params == killed.params
    # It went on from the killed trial's last checkpoint, not from epoch 0.
    assert retry.user_attrs["epochs_restored"] >= epochs_before_kill - 1 >= 2
    assert sorted(retry.intermediate_values) == list(range(1, KILL_EPOCHS + 1))
    assert not any(t.state == TrialState.RUNNING for t in trials)


def test_ctrl_c_stops_workers_cleanly_and_the_next_launch_resumes(tmp_path):
    study_file = write_study(tmp_path, name="stop", n_trials=2, epochs=STOP_EPOCHS)
    runs = tmp_path / "runs"
    url = f"sqlite:///{runs / 'stop' / 'study.db'}"
    command = ("launch", "--workers", "2", "--study", str(study_file), "--runs-dir", str(runs))
    launcher = spheroid_hpo(*command, cwd=tmp_path)
    try:
        wait_for_running_epochs(url, "stop.squeezenet1_1", 2, launcher=launcher, timeout=300)
        launcher.send_signal(signal.SIGINT)
        launcher.wait(timeout=90)
    finally:
        launcher.kill()
    output = (tmp_path / "launcher.log").read_text()
    assert launcher.returncode == 130, output
    assert "resume with the same command" in output
    assert worker_pids(runs) == []  # no orphans
    trials = optuna.load_study(study_name="stop.squeezenet1_1", storage=url).trials
    interrupted = [t for t in trials if t.user_attrs.get("fail_reason") == "interrupted"]
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    assert not any(t.state == TrialState.RUNNING for t in trials)

    # The same command again finishes the budget, going on from the interrupted checkpoints.
    rerun = subprocess.run([sys.executable, "-m", "spheroid_hpo", *command], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    trials = optuna.load_study(study_name="stop.squeezenet1_1", storage=url).trials
    resumed = {t.user_attrs["resumes_trial"]: t for t in trials if "resumes_trial" in t.user_attrs}
    assert set(resumed) == {t.number for t in interrupted}
    assert all(t.state == TrialState.COMPLETE for t in resumed.values())
    # Each goes on from the epochs its interrupted trial had checkpointed (a trial stopped
    # inside its first epoch has none); the one we waited for had at least two.
    restored = {n: t.user_attrs["epochs_restored"] for n, t in resumed.items()}
    assert all(restored[t.number] >= len(t.intermediate_values) for t in interrupted)
    assert max(restored.values()) >= 2
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
