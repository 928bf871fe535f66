"""Many workers on one real PostgreSQL server: a lab's GPU server plus a second machine.

One scenario runs the way docker-compose does: ``spheroid-hpo create`` puts the
study in a fresh database, then ``spheroid-hpo launch --workers 4`` and a worker
started by hand (its own process group and runs folder, standing for another
machine, sharing only the storage and the artifact folder) run it to the end.
A table lock held by the test lines the workers up at their first claim, so they
claim trials at nearly the same moment; the test releases it once all five wait
there, or after a minute, and asserts only what the code decided (every trial
recorded once, every worker's count adding up, each process's pool capped), not
which worker the scheduler let run which trial.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy
from conftest import POSTGRES_URL, write_tiny_study
from optuna.trial import TrialState
from psycopg import sql

from spheroid_hpo.tuning.records import budget_used
from spheroid_hpo.tuning.storage import masked_url, open_storage

# Every test here needs the PostgreSQL server: the default run leaves them out, CI runs them.
pytestmark = pytest.mark.postgres

SPHEROID_HPO = str(Path(sys.executable).with_name("spheroid-hpo"))
LAUNCH_WORKERS = 4
HAND_WORKER_INDEX = LAUNCH_WORKERS  # distinct from the launcher's 0..3, so its sampler seed differs
N_TRIALS = 4
# storage.open_storage: pool_size=2 + max_overflow=2 connections per process at most.
POOL_SIZE, MAX_OVERFLOW = 2, 2
# The barrier is released when every worker waits at it, or after this long regardless.
BARRIER_GRACE_S = 60
RAN_LINE = re.compile(r"worker (\d+): ran (\d+) trials")
CONNECTION_TROUBLE = re.compile(
    r"Traceback|OperationalError|InterfaceError|connection (failed|refused|reset|is closed)|"
    r"server closed the connection|too many clients",
    re.IGNORECASE,
)


def _url(database: str) -> sqlalchemy.engine.URL:
    return sqlalchemy.engine.make_url(POSTGRES_URL).set(database=database)


def _conninfo(database: str) -> str:
    """A libpq URI for psycopg, from the SQLAlchemy test URL."""
    return _url(database).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def database() -> str:
    """The storage URL of a database made for this module, dropped afterwards."""
    name = f"spheroid_test_{secrets.token_hex(4)}"
    with psycopg.connect(_conninfo("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _url(name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_conninfo("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass(frozen=True)
class DistributedRun:
    name: str
    storage_url: str
    server_runs: Path
    machine2_runs: Path
    artifacts: Path
    create_output: str
    launch_code: int
    launch_output: str
    worker_logs: dict[str, str]  # launcher's worker-<i>.log text by file name
    hand_code: int
    hand_output: str
    blocked_at_barrier: int


@pytest.fixture(scope="module")
def distributed_run(database, tmp_path_factory) -> DistributedRun:
    folder = tmp_path_factory.mktemp("distributed")
    name = "distributed"
    study_file = write_tiny_study(folder, name=name, n_trials=N_TRIALS)
    server_runs, machine2_runs = folder / "server" / "runs", folder / "machine2" / "runs"
    artifacts = folder / "shared" / "artifacts"  # the NFS folder every machine mounts
    machine2_runs.parent.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    created = subprocess.run(
        [SPHEROID_HPO, "create", "--study", str(study_file), "--storage", database, "--runs-dir", str(server_runs)],
        capture_output=True, text=True, timeout=300, cwd=folder, env=env,
    )
    assert created.returncode == 0, created.stderr

    database_name = sqlalchemy.engine.make_url(database).database
    launch_log, hand_log = folder / "launch.out", folder / "hand-worker.out"
    processes: list[subprocess.Popen] = []
    with psycopg.connect(_conninfo(database_name), autocommit=True) as monitor, \
            psycopg.connect(_conninfo(database_name)) as barrier, \
            open(launch_log, "wb") as launch_out, open(hand_log, "wb") as hand_out:
        # SHARE mode lets every worker read the studies but blocks writes to trials, so each
        # worker stops at its first claim until the barrier's transaction ends.
        barrier.execute("LOCK TABLE trials IN SHARE MODE")
        try:
            launch = subprocess.Popen(
                [SPHEROID_HPO, "launch", "--workers", str(LAUNCH_WORKERS), "--study", str(study_file),
                 "--storage", database, "--runs-dir", str(server_runs), "--artifacts", str(artifacts)],
                stdout=launch_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder, env=env,
                start_new_session=True,
            )
            processes.append(launch)
            hand = subprocess.Popen(
                [SPHEROID_HPO, "worker", "--storage", database, "--study", name, "--runs-dir", str(machine2_runs),
                 "--artifacts", str(artifacts), "--device", "cpu", "--threads", "1",
                 "--worker-index", str(HAND_WORKER_INDEX)],
                stdout=hand_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder / "machine2",
                env=env, start_new_session=True,  # a process group of its own: another machine
            )
            processes.append(hand)
            blocked = _release_and_watch(monitor, barrier, database_name, processes, logs=(launch_log, hand_log))
        finally:
            barrier.rollback()
            _stop_everything_under(folder, processes)

    return DistributedRun(
        name=name, storage_url=database, server_runs=server_runs, machine2_runs=machine2_runs, artifacts=artifacts,
        create_output=created.stdout, launch_code=launch.returncode, launch_output=launch_log.read_text(),
        worker_logs={p.name: p.read_text() for p in sorted((server_runs / name / "logs").glob("worker-*.log"))},
        hand_code=hand.returncode, hand_output=hand_log.read_text(), blocked_at_barrier=blocked,
    )


def _release_and_watch(
    monitor: psycopg.Connection, barrier: psycopg.Connection, database_name: str,
    processes: list[subprocess.Popen], *, logs: tuple[Path, ...],
) -> int:
    """Release the barrier once every worker waits on it, or after ``BARRIER_GRACE_S``; wait until all exit.

    Returns how many connections waited behind the barrier when it was released.
    """
    released_by = time.monotonic() + BARRIER_GRACE_S
    deadline = time.monotonic() + 600  # only a guard against a hang
    blocked = None
    while any(process.poll() is None for process in processes):
        assert time.monotonic() < deadline, "the distributed run did not finish in time\n" + _tail(*logs)
        if blocked is None:
            assert all(process.poll() is None for process in processes), _tail(*logs)
            waiting = monitor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND %s = ANY(pg_blocking_pids(pid))",
                (database_name, barrier.info.backend_pid),
            ).fetchone()[0]
            if waiting >= LAUNCH_WORKERS + 1 or time.monotonic() > released_by:
                blocked = waiting
                barrier.commit()
        time.sleep(0.25)
    return blocked or 0


def _tail(*paths: Path) -> str:
    return "\n".join(f"--- {path.name}\n{path.read_text()[-3000:]}" for path in paths)


def _stop_everything_under(folder: Path, processes: list[subprocess.Popen]) -> None:
    """Stop the processes this test started, the launcher's workers included, if any still run."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # the launcher stops its workers in order
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # Every process of the run names the test folder in its arguments (--runs-dir).
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline and int(proc.name) != os.getpid():
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def trials(distributed_run) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """Every study's trials as the run left them, by study name."""
    storage = open_storage(distributed_run.storage_url, heartbeat_interval=None)
    try:
        return {
            name: optuna.load_study(study_name=name, storage=storage).get_trials()
            for name in sorted(optuna.get_all_study_names(storage))
        }
    finally:
        storage.engine.dispose()


def _ran(text: str) -> dict[int, int]:
    return {int(worker): int(count) for worker, count in RAN_LINE.findall(text)}


def test_every_trial_is_recorded_and_none_stays_running(distributed_run, trials):
    assert sorted(trials) == [f"{distributed_run.name}.resnet18", f"{distributed_run.name}.squeezenet1_1"]
    for name, study_trials in trials.items():
        assert {t.state for t in study_trials} <= {TrialState.COMPLETE, TrialState.PRUNED}, name
        # Workers check the budget before claiming a trial, so ones that claim at the same
        # moment may each take the last trial; never more than one extra per other worker.
        assert N_TRIALS <= budget_used(study_trials) <= N_TRIALS + LAUNCH_WORKERS, name
        assert sum(bool(t.user_attrs.get("baseline")) for t in study_trials) == 1  # not enqueued again
        for trial in study_trials:
            assert "wall_time_seconds" in trial.user_attrs and trial.datetime_complete is not None


def test_workers_exit_cleanly_without_connection_errors(distributed_run):
    assert distributed_run.launch_code == 0, distributed_run.launch_output
    assert distributed_run.hand_code == 0, distributed_run.hand_output
    assert len(distributed_run.worker_logs) == LAUNCH_WORKERS
    for text in [*distributed_run.worker_logs.values(), distributed_run.hand_output]:
        assert RAN_LINE.search(text), text
        assert not CONNECTION_TROUBLE.search(text), text


def test_each_process_pools_at_most_four_connections(database):
    """What caps a process's connections is its pool: two kept, two more on demand, each pinged before use."""
    storage = open_storage(database, heartbeat_interval=None)
    try:
        pool = storage.engine.pool
        assert isinstance(pool, sqlalchemy.pool.QueuePool)
        assert (pool.size(), pool._max_overflow) == (POOL_SIZE, MAX_OVERFLOW)
        assert pool._pre_ping and pool._recycle == 1800
        # The cap holds: a fifth checkout waits for a connection instead of opening one.
        pool._timeout = 0.5
        held = [storage.engine.connect() for _ in range(POOL_SIZE + MAX_OVERFLOW)]
        with pytest.raises(sqlalchemy.exc.TimeoutError):
            storage.engine.connect()
        for connection in held:
            connection.close()
    finally:
        storage.engine.dispose()


def test_hand_started_worker_joins_the_running_study(distributed_run, trials):
    hand = _ran(distributed_run.hand_output)
    launched = {}
    for text in distributed_run.worker_logs.values():
        launched.update(_ran(text))
    assert sorted(launched) == list(range(LAUNCH_WORKERS))
    assert list(hand) == [HAND_WORKER_INDEX]  # it ran its loop to the end of the budget
    total = sum(len(study_trials) for study_trials in trials.values())
    assert hand[HAND_WORKER_INDEX] + sum(launched.values()) == total  # every trial was run by one of them


def test_hand_started_worker_uses_its_own_disk_and_the_shared_artifacts(distributed_run, trials):
    name = distributed_run.name
    # Its split manifest came from the storage, identical to the server's.
    server_split = (distributed_run.server_runs / name / "splits.csv").read_text()
    assert (distributed_run.machine2_runs / name / "splits.csv").read_text() == server_split
    assert list(distributed_run.machine2_runs.glob("demo-data-*")), "the demo data is made on its own disk"
    complete = [t for study_trials in trials.values() for t in study_trials if t.state == TrialState.COMPLETE]
    assert complete
    for trial in complete:
        assert (distributed_run.artifacts / trial.user_attrs["model_artifact_id"]).is_file()


def test_create_lists_the_studies_and_how_to_join(distributed_run):
    output = distributed_run.create_output
    assert f"{distributed_run.name}.squeezenet1_1" in output and f"{distributed_run.name}.resnet18" in output
    url = masked_url(distributed_run.storage_url)
    assert f"spheroid-hpo worker --storage {url} --study {distributed_run.name}" in output


def test_pooled_connection_killed_by_the_server_is_replaced(database):
    """pool_pre_ping: a connection the server (or a proxy) dropped is never handed out."""
    url = _url(sqlalchemy.engine.make_url(database).database).update_query_dict(
        {"application_name": "spheroid_pre_ping"}
    ).render_as_string(hide_password=False)
    storage = open_storage(url, heartbeat_interval=None)
    optuna.create_study(study_name="pre_ping", storage=storage)
    with psycopg.connect(_conninfo("postgres"), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
            ("spheroid_pre_ping",),
        ).fetchone()[0]
    assert killed >= 1
    assert optuna.load_study(study_name="pre_ping", storage=storage).trials == []
    storage.engine.dispose()


def test_workers_claim_the_next_trial_one_at_a_time(database):
    """Counting the trials and creating the next one is one step across workers: two that both
    counted the last free trial would both run it (seen with compose replicas finishing together)."""
    import threading

    from spheroid_hpo.tuning.worker import _ClaimLock

    storage = open_storage(database, heartbeat_interval=None)
    first, second, other_family = (_ClaimLock(storage, "a"), _ClaimLock(storage, "a"), _ClaimLock(storage, "b"))
    first.acquire()
    claimed = threading.Event()
    waiter = threading.Thread(target=lambda: (second.acquire(), claimed.set()))
    waiter.start()
    try:
        assert not claimed.wait(1.5), "a second worker claimed while the first held the lock"
        other_family.acquire()  # another study on the same server does not wait
        other_family.release()
        first.release()
        assert claimed.wait(10), "the lock was not handed on when released"
    finally:
        first.release()
        waiter.join(timeout=10)
        second.release()
    first.acquire()  # released for good: taken again at once
    first.release()



def test_a_worker_on_postgresql_queues_a_stopped_workers_trial_again_and_runs_it(database, tmp_path, monkeypatch):
    """A worker stopped by SIGTERM (SLURM's time-limit warning, `scancel`, `docker stop`) leaves its trial
    interrupted; the next worker to join, with no launch in between, queues it again once and runs it
    from that trial's checkpoint. The SLURM test does this on a real cluster; here two workers in turn,
    in this process."""
    import torch
    from study_files import one_architecture_study

    import spheroid_hpo.training.loop as loop
    import spheroid_hpo.tuning.worker as worker_module
    from spheroid_hpo.tuning.create import create_study_family
    from spheroid_hpo.tuning.records import INTERRUPTED, RESUMES_TRIAL, fail_reason
    from spheroid_hpo.tuning.study_file import parse_study_text

    name = f"stopped{secrets.token_hex(3)}"
    text = one_architecture_study(name=name, n_trials=1)
    text = text.replace("n_trials = 1", f'n_trials = 1\nstorage = "{database}"')
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    runs = tmp_path / "runs"
    family = create_study_family(config=parse_study_text(text, source=path), runs_dir=runs)
    storage = open_storage(database, heartbeat_interval=None)

    def stopped_by_sigterm(*args, **kwargs):
        raise worker_module._Interrupted()  # what the worker's SIGTERM handler raises in the training loop

    def join() -> int:
        return worker_module.run_worker(study=name, storage_url=family.storage_url, runs_dir=runs, device="cpu",
                                        threads=1).trials_run

    previous_threads = torch.get_num_threads()  # a worker sets this process's thread count
    try:
        with monkeypatch.context() as patched:
            patched.setattr(loop, "train", stopped_by_sigterm)
            assert join() == 0
        (stopped,) = optuna.load_study(study_name=f"{name}.squeezenet1_1", storage=storage).get_trials()
        assert stopped.state == TrialState.FAIL and fail_reason(stopped) == INTERRUPTED
        assert join() == 1  # the budget of one is the stopped trial's: only its queued copy may run
        trials = optuna.load_study(study_name=f"{name}.squeezenet1_1", storage=storage).get_trials()
    finally:
        torch.set_num_threads(previous_threads)
        storage.engine.dispose()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE], trials
    assert trials[1].params == stopped.params and trials[1].user_attrs[RESUMES_TRIAL] == stopped.number
    assert budget_used(trials) == 1
