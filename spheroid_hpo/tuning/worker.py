"""A worker process: load the studies, decode the data once, run trials until the budgets are spent.

``spheroid-hpo worker`` runs this by hand on any machine that reaches the
storage; ``spheroid-hpo launch`` starts N of them through the same function.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy
import torch
from optuna.trial import TrialState

from spheroid_hpo.data import TrainingData, load_recorded_dataset, training_data
from spheroid_hpo.defaults import RUNS_DIR
from spheroid_hpo.errors import InputError
from spheroid_hpo.training.device import resolve_device
from spheroid_hpo.training.models import check_weights
from spheroid_hpo.tuning import records
from spheroid_hpo.tuning.objective import TrialTakenOver, build_objective
from spheroid_hpo.tuning.storage import open_artifact_store, open_storage, require_existing_sqlite
from spheroid_hpo.tuning.studies import checkpoint_dir, find_study_family, load_studies, requeue_interrupted
from spheroid_hpo.tuning.study_file import StudyConfig, check_timeout
from spheroid_hpo.tuning.workspace import Workspace

log = logging.getLogger("spheroid_hpo.tuning.worker")
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class WorkerSummary:
    """How many trials a worker ran, and in how long."""

    trials_run: int
    seconds: float


class _Interrupted(KeyboardInterrupt):
    """Raised when the worker is asked to stop. Like Ctrl-C it is not caught by
    ``optimize(catch=...)``: the running trial is marked FAIL, tagged interrupted,
    and the worker ends."""


def run_worker(
    *,
    study: str | None,
    storage_url: str | None,
    data_dir: Path | None = None,
    artifact_dir: Path | None = None,
    runs_dir: Path = RUNS_DIR,
    device: str = "auto",
    threads: int | None = None,
    worker_index: int = 0,
    timeout: float | None = None,
    heartbeat_interval: int | None = None,
) -> WorkerSummary:
    """Join the study ``study`` in ``storage_url`` and run its trials until every budget is spent."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    started = time.monotonic()
    if timeout is not None:
        check_timeout(timeout, "--timeout")  # NaN compares false with everything: no trial ran, exit 0
    if threads is not None:
        torch.set_num_threads(threads)
    url = storage_url or Workspace.default_storage_url(study or "", runs_dir=runs_dir)
    require_existing_sqlite(url)  # a worker joins a study; it never creates one
    storage = open_storage(url, **({"heartbeat_interval": heartbeat_interval} if heartbeat_interval else {}))
    config, _ = find_study_family(storage, study)
    studies = load_studies(config, storage)
    # The weights file is read on this machine: a worker without it stops here, in one line,
    # instead of failing the study's trials one after another.
    check_weights(config.training.weights, architectures=config.architectures)
    torch_device = resolve_device(device)
    data = _load_trial_data(config, studies, data_dir=data_dir, runs_dir=runs_dir, device=torch_device)
    workspace = Workspace.of(config.name, runs_dir=runs_dir, storage_url=url, artifact_dir=artifact_dir)
    artifacts = open_artifact_store(workspace.artifact_dir)
    objectives = {
        architecture: build_objective(
            architecture=architecture, data=data, search_space=config.search_space, device=torch_device,
            artifact_store=artifacts,
            checkpoint_dir=checkpoint_dir(studies[architecture], workspace.checkpoints),
            precision=config.training.precision, weights=config.training.weights, seed=config.training.seed,
        )
        for architecture in config.architectures
    }
    log.info("worker %d on %s, %d threads", worker_index, torch_device, torch.get_num_threads())

    # SIGTERM (from the launcher's Ctrl-C handling, `docker stop`, SLURM's warning before a time
    # limit or `scancel`) stops the running trial as interrupted: another worker on PostgreSQL
    # (below), or else the next launch, resumes it from its checkpoint instead of losing it.
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    trials_run = 0
    claim = _ClaimLock(storage, config.name)
    # A trial releases the claim as its objective starts: by then the trial is in storage.
    objectives = {architecture: _releasing(claim, objective) for architecture, objective in objectives.items()}
    try:
        while timeout is None or time.monotonic() - started < timeout:
            # Choosing the architecture and creating its trial is one step for all workers:
            # two that counted the same last free trial would both run it, over the budget.
            claim.acquire()
            if claim.held:
                # Under the claim only one worker queues a stopped worker's trial again, once.
                for study in studies.values():
                    requeue_interrupted(study)
            architecture = next_architecture(studies, worker_index=worker_index)
            if architecture is DONE:
                break
            if architecture is WAIT:
                # Budgets are spent but a trial still runs elsewhere; if its worker died, its
                # heartbeat goes stale and it is queued again, so stay to run the retry.
                claim.release()
                time.sleep(POLL_SECONDS)
                continue
            try:
                studies[architecture].optimize(
                    _marking_interrupts(objectives[architecture]), n_trials=1, catch=(Exception,),
                    gc_after_trial=False,
                )
            except TrialTakenOver as taken:
                # Paused past the heartbeat grace period, this worker's trial was failed and
                # queued again; its retry owns it now, so leave it alone and go on.
                log.warning("worker %d: %s; going on to the next trial", worker_index, taken)
                continue
            finally:
                claim.release()  # in case the trial ended before its objective ran
            trials_run += 1
    except _Interrupted:
        log.info("worker %d interrupted after %d trials", worker_index, trials_run)
    finally:
        claim.release()
        signal.signal(signal.SIGTERM, previous)
    return WorkerSummary(trials_run=trials_run, seconds=time.monotonic() - started)


def default_worker_index() -> int:
    """A worker index from the host name and process id, for workers started without one.

    Replicas of a compose service and workers on different machines all start without
    ``--worker-index``; distinct indexes spread them over the architectures (the sampler's
    seed comes from each trial's number, see ``tuning/distinct.py``).
    """
    return zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 100_000


class _ClaimLock:
    """A PostgreSQL advisory lock per study family, held from counting the trials until the new
    trial exists (RUNNING, so counted by the next worker). Session-level: the server drops it
    when the worker's connection dies. SQLite storage is one machine's, where `launch` gives
    workers distinct indexes; there it is not taken."""

    def __init__(self, storage: optuna.storages.RDBStorage, family: str):
        self._engine = storage.engine if storage.engine.dialect.name == "postgresql" else None
        # One key per family, so that different studies on one server do not wait on each other.
        self._key = zlib.crc32(f"spheroid-hpo claim {family}".encode())
        self._connection = None

    def acquire(self) -> None:
        if self._engine is None or self._connection is not None:
            return
        connection = self._engine.connect()
        try:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
            connection.commit()
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    @property
    def held(self) -> bool:
        """True between ``acquire`` and ``release`` on PostgreSQL: no other worker of the family is claiming."""
        return self._connection is not None

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            connection.commit()
        finally:
            connection.close()


def _releasing(claim: _ClaimLock, objective):
    """``objective``, releasing ``claim`` first: when it runs, its trial is in storage."""
    def wrapped(trial: optuna.Trial) -> float:
        claim.release()
        return objective(trial)
    return wrapped


def _raise_interrupted(signum, frame):
    # Stopping takes a few storage writes; a second SIGTERM meanwhile (SLURM's at the time limit,
    # after its --signal warning; an impatient user) must not break them off half done.
    signal.signal(signum, signal.SIG_IGN)
    raise _Interrupted(f"received signal {signum}")


def _marking_interrupts(objective):
    def wrapped(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except _Interrupted:
            trial.set_user_attr(records.FAIL_REASON, records.INTERRUPTED)
            raise
    return wrapped


# What next_architecture says when no trial should start now: every budget is spent and no
# trial runs (DONE), or budgets are spent but a trial still runs and may be retried (WAIT).
DONE = "done"
WAIT = "wait"


def next_architecture(studies: dict[str, optuna.Study], *, worker_index: int = 0) -> str:
    """The architecture to run a trial of next, or ``WAIT``, or ``DONE``.

    Queued trials (the baseline, retries of killed trials, resumed interrupted ones)
    come first; then the study with the fewest trials among those with budget left.
    Ties go round-robin by worker index, so workers that start together spread over
    the architectures instead of all claiming the first one's last trials.
    """
    counts: dict[str, int] = {}
    running = False
    for architecture, study in studies.items():
        # Turn trials whose worker died into FAIL plus a queued retry before counting.
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return architecture
        running = running or any(t.state == TrialState.RUNNING for t in trials)
        budget = records.budget(study)
        used = records.budget_used(trials)
        if budget is None or used < budget:
            counts[architecture] = used
    if counts:
        order = {architecture: position for position, architecture in enumerate(studies)}
        return min(counts, key=lambda a: (counts[a], (order[a] - worker_index) % len(order)))
    return WAIT if running else DONE


def _load_trial_data(
    config: StudyConfig, studies: dict[str, optuna.Study], *, data_dir: Path | None, runs_dir: Path,
    device: torch.device,
) -> TrainingData:
    """Decode the study's train and validation splits once, checking they are the study's data."""
    first = next(iter(studies.values()))
    source, manifest_csv = records.data_source(first.user_attrs), records.manifest_csv(first.user_attrs)
    if source is None or manifest_csv is None:
        raise InputError(f"study {first.study_name} records no data; run `spheroid-hpo launch` to create it")
    manifest = Workspace.of(config.name, runs_dir=runs_dir).manifest
    dataset = load_recorded_dataset(
        source, owner=f"study {config.name}", manifest_csv=manifest_csv,
        manifest_path=manifest, data_dir=data_dir, runs_dir=runs_dir,
        splits=("train", "val"),
    ).to(device)
    return training_data(dataset, manifest=manifest, cv_folds=config.data.cv_folds, split_seed=config.data.split.seed)
