"""`spheroid-hpo slurm`: the workers as one SLURM array job.

The fast tests read the job script `--dry-run` prints, and submit through a stand-in sbatch. The
slow one runs a tiny study on a real single-node SLURM cluster (tests/slurm_cluster.py) against
the local PostgreSQL: three array tasks on two cores; one task's running trial is stopped the way
SLURM's time-limit warning stops it, another task is `scancel`ed while its trial runs, and the
third task, started late, finishes both trials from their checkpoints. Outside CI it is skipped
with one line when SLURM cannot start; with CI=true it fails instead.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy
from conftest import POSTGRES_URL
from optuna.trial import TrialState
from psycopg import sql
from slurm_cluster import ClusterUnavailable, install_if_missing, single_node_cluster
from study_files import write_one_architecture_study, write_tiny_study

from spheroid_hpo.cli import main
from spheroid_hpo.tuning import records
from spheroid_hpo.tuning.slurm import time_limit_seconds
from spheroid_hpo.tuning.storage import masked_url, open_storage

PASSWORD = "s3cret-Pw"
URL_WITH_PASSWORD = f"postgresql+psycopg://lab:{PASSWORD}@db.cluster:5432/hpo"


def spheroid_hpo(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real program in a child process (what the SLURM test submits with)."""
    return subprocess.run([sys.executable, "-m", "spheroid_hpo", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


def run_cli(monkeypatch, capsys, *args: str, cwd: Path) -> tuple[int, str, str]:
    """``spheroid-hpo ARGS`` in this process through the console-script entry point: (exit code, stdout, stderr).

    In a child each would pay 10-15 s of imports on a busy 2-core machine.
    """
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    code = exit_info.value.code
    out, err = capsys.readouterr()
    return (code if isinstance(code, int) else 1), out, err


def test_dry_run_prints_the_array_job_script_without_the_password(tmp_path, monkeypatch, capsys):
    study_file = write_tiny_study(tmp_path, name="cluster")
    data = tmp_path / "shared" / "data"
    code, script, err = run_cli(
        monkeypatch, capsys, "slurm", "--tasks", "6", "--study", str(study_file), "--storage", URL_WITH_PASSWORD,
        "--data", str(data),
        "--artifacts", "shared/artifacts", "--runs-dir", "shared/runs", "--time", "1-12:00:00",
        "--partition", "gpu", "--account", "lab42", "--gpus", "1", "--cpus", "6", "--signal-grace", "300",
        "--sbatch=--mem=16G", "--sbatch", "#SBATCH --constraint=a100", "--worker-command", "/opt/venv/bin/spheroid-hpo",
        "--heartbeat-interval", "20", "--dry-run", cwd=tmp_path,
    )
    assert code == 0, err
    assert script.startswith("#!/bin/bash\n")
    sbatch = re.findall(r"^#SBATCH (\S+)$", script, re.MULTILINE)
    assert "--array=0-5" in sbatch and "--time=1-12:00:00" in sbatch
    assert "--partition=gpu" in sbatch and "--account=lab42" in sbatch
    assert "--gres=gpu:1" in sbatch and "--cpus-per-task=6" in sbatch
    # B: sends the warning to the batch shell, which `exec` makes the worker.
    assert "--signal=B:TERM@300" in sbatch
    assert sbatch[-2:] == ["--mem=16G", "--constraint=a100"]
    assert f"--output={tmp_path / 'shared/runs/cluster/logs'}/slurm-%A_%a.log" in sbatch
    # Every #SBATCH line comes before the first command, or sbatch ignores it.
    lines = script.splitlines()
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert all(i < first_command for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    (exec_line,) = [line for line in lines if line.startswith("exec ")]
    assert exec_line == (
        "exec /opt/venv/bin/spheroid-hpo worker --study cluster --storage postgresql+psycopg://lab@db.cluster:5432/hpo "
        f"--artifacts {tmp_path / 'shared/artifacts'} --runs-dir {tmp_path / 'shared/runs'} --device cuda "
        f"--threads 6 --data {data} --heartbeat-interval 20"
    )
    assert "export OMP_NUM_THREADS=6 MKL_NUM_THREADS=6" in lines
    assert PASSWORD not in script + err
    # A dry run creates nothing: no study (the server does not exist), no folder.
    assert not (tmp_path / "shared").exists()
    assert "nothing submitted" in err


def test_cpu_tasks_ask_for_no_gpu_and_train_on_the_cpu(tmp_path, monkeypatch, capsys):
    study_file = write_tiny_study(tmp_path, name="cpu")
    code, script, err = run_cli(monkeypatch, capsys, "slurm", "--tasks", "2", "--study", str(study_file),
                                "--storage", URL_WITH_PASSWORD, "--dry-run", cwd=tmp_path)
    assert code == 0, err
    assert "--gres" not in script and "--device cpu" in script
    assert "--time" not in script and "--partition" not in script  # the cluster's defaults


@pytest.mark.parametrize("options, names", [
    (["--time", "4h"], "'4h'"),
    (["--time", "2", "--signal-grace", "120"], "--time 2"),
    (["--partition", "gpu; rm -rf ~"], "'gpu; rm -rf ~'"),
    (["--sbatch", "mem=16G"], "'mem=16G'"),
    (["--storage", "sqlite:///runs/x.db"], "sqlite:///runs/x.db"),
])
def test_bad_slurm_options_are_refused_in_one_line(tmp_path, monkeypatch, capsys, options, names):
    study_file = write_tiny_study(tmp_path, name="bad")
    storage = [] if "--storage" in options else ["--storage", URL_WITH_PASSWORD]
    code, _, err = run_cli(monkeypatch, capsys, "slurm", "--tasks", "2", "--study", str(study_file), *storage,
                           *options, "--dry-run", cwd=tmp_path)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and names in err, err
    assert PASSWORD not in err


def test_without_sbatch_nothing_is_created(tmp_path, monkeypatch, capsys):
    study_file = write_tiny_study(tmp_path, name="nosbatch")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    code, _, err = run_cli(monkeypatch, capsys, "slurm", "--tasks", "2", "--study", str(study_file),
                           "--storage", URL_WITH_PASSWORD, cwd=tmp_path)
    assert code == 2 and "sbatch is not on PATH" in err, err
    assert not (tmp_path / "runs").exists()


FAKE_SBATCH = """#!/bin/sh
# Stands in for sbatch: records what it was given, answers like `sbatch --parsable`.
printf '%s\\n' "$@" > "$0.args"
printf '%s' "${PGPASSWORD:-}" > "$0.password"
cp "$3" "$0.script"
if [ -n "${FAKE_SBATCH_ERROR:-}" ]; then echo "sbatch: error: $FAKE_SBATCH_ERROR" >&2; exit 1; fi
echo "4242;cluster"
"""


@pytest.mark.postgres
def test_submit_creates_the_study_and_hands_sbatch_the_password_by_environment_only(
        tmp_path, monkeypatch, capsys, database_url):
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.parent.mkdir()
    sbatch.write_text(FAKE_SBATCH)
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{sbatch.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    study_file = write_one_architecture_study(tmp_path, name="submitted")
    command = ("slurm", "--tasks", "2", "--study", str(study_file), "--storage", database_url, "--time", "30")

    code, out, err = run_cli(monkeypatch, capsys, *command, cwd=tmp_path)
    assert code == 0, err
    assert "submitted job 4242" in out and "squeue -j 4242" in out
    assert f"spheroid-hpo report --storage {masked_url(database_url)} --study submitted" in out
    script = tmp_path / "runs" / "submitted" / "slurm-job.sh"
    assert sbatch.with_suffix(".args").read_text().split() == ["--parsable", "--export=ALL", str(script)]
    assert sbatch.with_suffix(".password").read_text() == PASSWORD
    assert sbatch.with_suffix(".script").read_text() == script.read_text()
    assert PASSWORD not in script.read_text() + out + err
    assert (tmp_path / "runs" / "submitted" / "logs").is_dir()  # sbatch would not make it: the tasks' output
    storage = open_storage(database_url, heartbeat_interval=None)
    assert optuna.get_all_study_names(storage) == ["submitted.squeezenet1_1"]
    storage.engine.dispose()

    # sbatch refusing the job: one line with its reason; the study stays, and the same command goes on.
    monkeypatch.setenv("FAKE_SBATCH_ERROR", "invalid partition specified: gpu")
    code, out, err = run_cli(monkeypatch, capsys, *command, cwd=tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "sbatch refused" in err and "invalid partition specified: gpu" in err and PASSWORD not in err


def test_slurm_time_limits_in_seconds():
    assert [time_limit_seconds(text) for text in ("90", "5:30", "4:00:00", "2-0", "1-12:00", "1-00:00:30")] == [
        5400, 330, 14400, 172800, 129600, 86430]


def test_a_second_sigterm_does_not_break_off_a_stopping_worker():
    """SLURM sends SIGTERM again at the time limit, after --signal's warning; the worker's clean-up
    (marking its trial interrupted in storage) must not be broken off by it."""
    from spheroid_hpo.tuning.worker import _Interrupted, _raise_interrupted

    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        with pytest.raises(_Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here, at once
        # While the worker stops, a second SIGTERM is ignored (asserted, not sent: a mutant
        # that raised again would interrupt pytest itself).
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- a real SLURM cluster ------------------------------------------------------------------------

# Three tasks on the node's two cores: the third starts when the first is stopped. Three trials,
# of which two are stopped while running and go on in another task.
TASKS = 3
N_TRIALS = 3
# About 0.2 s an epoch on an idle core (tests/test_faults.py), so a trial lasts several seconds:
# long enough that the poll catches it running with a few epochs checkpointed.
EPOCHS = 20
STOP_AFTER_EPOCHS = 3


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _conninfo(database: str) -> str:
    return sqlalchemy.engine.make_url(POSTGRES_URL).set(drivername="postgresql", database=database).render_as_string(
        hide_password=False)


@pytest.fixture
def database_url():
    """A fresh database on the test server; its URL carries a password (trust auth ignores it)."""
    name = f"spheroid_slurm_{secrets.token_hex(4)}"
    with psycopg.connect(_conninfo("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield sqlalchemy.engine.make_url(POSTGRES_URL).set(database=name, password=PASSWORD).render_as_string(
            hide_password=False)
    finally:
        with psycopg.connect(_conninfo("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class Timings:
    """Seconds per phase, printed as they pass (`pytest -s`, and CI's log)."""

    def __init__(self):
        self.last = time.monotonic()

    def lap(self, what: str) -> None:
        now = time.monotonic()
        print(f"slurm test: {what}: {now - self.last:.1f} s", flush=True)
        self.last = now


def _wait(condition, *, timeout: float, what: str, explain=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{explain()}")
        time.sleep(0.2)


def _worker_processes(runs_dir: Path) -> dict[int, tuple[bytes, bytes]]:
    """Command line and environment of each worker process whose arguments name ``runs_dir``."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
            if b"worker" in command.split(b"\0") and str(runs_dir).encode() in command:
                found[int(entry.name)] = (command, (entry / "environ").read_bytes())
        except OSError:
            continue
    return found


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.postgres
def test_array_job_on_a_real_slurm_survives_a_cancelled_task(tmp_path, database_url):
    timings = Timings()
    try:
        installed = install_if_missing()
        timings.lap("apt-get install slurm-wlm munge" if installed else "SLURM already installed")
        cluster_context = single_node_cluster(tmp_path / "slurm")
        cluster = cluster_context.__enter__()
    except (ClusterUnavailable, OSError, subprocess.SubprocessError) as error:  # OSError: no runuser, no /run
        if _ci():
            pytest.fail(f"CI=true but SLURM cannot start: {error}")
        pytest.skip(f"SLURM cannot start here: {str(error).splitlines()[0]}")
    try:
        timings.lap("munged, slurmctld and slurmd up, node idle")
        _run_the_study(tmp_path, database_url, cluster, timings)
    finally:
        cluster_context.__exit__(None, None, None)
        timings.lap("daemons stopped")


def _run_the_study(tmp_path: Path, database_url: str, cluster, timings: Timings) -> None:
    name = f"slurm{secrets.token_hex(3)}"
    study_file = write_one_architecture_study(tmp_path, name=name, n_trials=N_TRIALS, epochs=EPOCHS, sampler="random")
    runs_dir = tmp_path / "shared" / "runs"
    submitted = spheroid_hpo(
        "slurm", "--tasks", str(TASKS), "--study", str(study_file), "--storage", database_url,
        "--runs-dir", str(runs_dir), "--cpus", "1", "--time", "10", "--signal-grace", "30", "--sbatch=--mem=1G",
        "--heartbeat-interval", "2", "--worker-command", f"{sys.executable} -m spheroid_hpo",
        cwd=tmp_path, env=cluster.env, timeout=300,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = re.search(r"submitted job (\d+)", submitted.stdout).group(1)
    assert f"squeue -j {job_id}" in submitted.stdout and "spheroid-hpo dashboard --storage" in submitted.stdout
    script = (runs_dir / name / "slurm-job.sh").read_text()
    print(f"slurm test: the job script\n{script}", flush=True)
    timings.lap("spheroid-hpo slurm: study created, job submitted")

    storage = open_storage(database_url, heartbeat_interval=None)
    study_name = f"{name}.squeezenet1_1"
    logs = runs_dir / name / "logs"
    explain = lambda: cluster.logs() + "\n" + "\n".join(  # noqa: E731
        f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("slurm-*.log")))

    def job_done() -> bool:
        return not cluster.run("squeue", "-h", "-j", job_id, check=False).stdout.strip()

    def stop_a_running_trial(how: tuple[str, ...], what: str) -> tuple[optuna.trial.FrozenTrial, str, float]:
        """Wait for a trial running with a few epochs checkpointed, then stop its task ``how``;
        return the trial as it was, the task, and the seconds its worker took to end itself."""
        def running_trial():
            assert not job_done(), "the job ended before a trial could be stopped\n" + explain()
            trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
            return next((t for t in trials if t.state == TrialState.RUNNING and records.SLURM_TASK in t.user_attrs
                         and len(t.intermediate_values) >= STOP_AFTER_EPOCHS), None)

        trial = _wait(running_trial, timeout=240, what=f"a running trial with {STOP_AFTER_EPOCHS} epochs",
                      explain=explain)
        task = trial.user_attrs[records.SLURM_TASK]
        timings.lap(f"trial {trial.number} of task {task} at epoch {len(trial.intermediate_values)}")
        cluster.run(*how, task)
        stopped_at = time.monotonic()
        task_log = logs / f"slurm-{task}.log"
        # The worker program's last line: it ended itself instead of being killed KillWait (30 s) later.
        _wait(lambda: re.search(r"worker \d+: ran \d+ trials", task_log.read_text()), timeout=60,
              what=f"task {task}'s worker to stop", explain=explain)
        seconds = time.monotonic() - stopped_at
        timings.lap(f"{what} task {task}: its worker stopped itself")
        return trial, task, seconds

    # The warning SLURM sends before the time limit (--signal=B:TERM@grace) goes to the batch shell
    # only: `scancel --batch --signal=TERM` sends exactly that, now.
    warned, warned_task, warned_seconds = stop_a_running_trial(("scancel", "--batch", "--signal=TERM"),
                                                               "time-limit warning (SIGTERM to the batch shell) to")
    workers = _worker_processes(runs_dir)
    # The third task waited for a free core and starts now, late, as tasks do on a busy cluster.
    cancelled, cancelled_task, cancelled_seconds = stop_a_running_trial(("scancel",), "scancel of")
    _wait(job_done, timeout=300, what=f"job {job_id} to end", explain=explain)
    timings.lap("the remaining tasks finished the study")

    states = {key: fields["JobState"] for key, fields in cluster.job_records(job_id).items()}
    assert len(states) == TASKS and states.pop(cancelled_task) == "CANCELLED", states
    # A worker that stopped at the warning ended its task normally: not an error, nothing to clean up.
    assert set(states.values()) == {"COMPLETED"}, states

    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials()
    storage.engine.dispose()
    print("slurm test: trials: " + "; ".join(
        f"#{t.number} {t.state.name} on {t.user_attrs.get(records.SLURM_TASK)}, "
        f"{len(t.intermediate_values)} epochs, {t.user_attrs.get(records.EPOCHS_RESTORED)} restored, "
        f"{'resumes #' + str(t.user_attrs[records.REQUEUED_FROM]) if records.REQUEUED_FROM in t.user_attrs else ''} "
        f"{t.user_attrs.get(records.FAIL_REASON) or ''}" for t in trials), flush=True)
    by_number = {t.number: t for t in trials}
    for stopped, task, seconds in ((warned, warned_task, warned_seconds),
                                   (cancelled, cancelled_task, cancelled_seconds)):
        # The worker took SIGTERM, marked its trial interrupted and exited well within the grace
        # time (else the trial would have stayed RUNNING until the heartbeat retry).
        assert by_number[stopped.number].state == TrialState.FAIL, by_number[stopped.number].user_attrs
        assert records.was_interrupted(by_number[stopped.number]) and seconds < 30
        # Another task queued it again at once and went on from its checkpoint; a copy stopped in
        # turn (the cancelled trial may be the first one's copy) is followed to its end.
        final = by_number[stopped.number]
        while final.state != TrialState.COMPLETE:
            (final,) = [t for t in trials if t.user_attrs.get(records.REQUEUED_FROM) == final.number]
        assert final.params == stopped.params and final.user_attrs[records.SLURM_TASK] != task
        assert final.user_attrs[records.EPOCHS_RESTORED] >= len(stopped.intermediate_values) - 1 >= 1
        assert sorted(final.intermediate_values) == list(range(1, EPOCHS + 1))
    # Every trial finished, none twice, and the budget holds.
    assert [t.state for t in trials].count(TrialState.COMPLETE) == N_TRIALS
    assert all(records.was_interrupted(t) for t in trials if t.state != TrialState.COMPLETE)
    assert records.budget_used(trials) == N_TRIALS

    # The password reached the workers by their environment only.
    assert workers, "no worker process seen while the trials ran"
    for command, environ in workers.values():
        assert PASSWORD.encode() not in command
        assert f"PGPASSWORD={PASSWORD}".encode() in environ.split(b"\0")
    shown = cluster.run("scontrol", "-dd", "show", "job", job_id).stdout
    assert f"Command={runs_dir / name / 'slurm-job.sh'}" in shown
    log_text = "".join(p.read_text() for p in logs.glob("*.log"))
    for text in (script, shown, submitted.stdout, submitted.stderr, log_text):
        assert PASSWORD not in text
