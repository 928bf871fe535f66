"""``spheroid-hpo slurm``: create the study once, then run its workers as the tasks of one SLURM array job.

Only the launcher differs from ``launch`` and compose: each array task ``exec``s the same
``spheroid-hpo worker`` program, so the task's shell is the worker and SLURM's warning signal
(``--signal=B:TERM@grace``) reaches it. A worker that gets SIGTERM marks its running trial
interrupted and exits; the trial goes on from its last checkpoint (on the shared folder) in
another task, or in the next job. A task killed outright (no warning, or a worker too slow to
stop) leaves its trial to the heartbeat retry, which resumes from the same checkpoint.

The storage password is never written to the script or passed on a command line: ``sbatch``
hands it to the tasks in their environment (``PGPASSWORD``), or libpq reads ``~/.pgpass``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.atomic_write import write_text_atomically
from spheroid_hpo.defaults import RUNS_DIR, SLURM_CPUS_PER_TASK, SLURM_SIGNAL_GRACE_S
from spheroid_hpo.errors import InputError
from spheroid_hpo.tuning.create import create_study_family
from spheroid_hpo.tuning.launch import worker_arguments
from spheroid_hpo.tuning.storage import masked_url, split_password
from spheroid_hpo.tuning.study_file import StudyConfig
from spheroid_hpo.tuning.workspace import Workspace

SCRIPT_NAME = "slurm-job.sh"  # in runs/<study>/, rewritten at each submission (sbatch keeps its own copy)
# SLURM's time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds.
_TIME_LIMIT = re.compile(r"^(?:(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?|(\d+)(?::(\d+)(?::(\d+))?)?)$")
# `sbatch --signal` takes at most 65535 seconds.
MAX_SIGNAL_GRACE_S = 65535


def time_limit_seconds(text: str) -> int:
    """Seconds of a SLURM time limit such as ``90``, ``4:00:00`` or ``1-12:00``; InputError otherwise."""
    match = _TIME_LIMIT.match(text.strip())
    if not match:
        raise InputError(
            f"--time {text!r} is not a SLURM time limit; write MINUTES, HH:MM:SS or DAYS-HH:MM:SS (e.g. 4:00:00)"
        )
    days, d_hours, d_minutes, d_seconds, minutes, m_seconds, h_seconds = (int(g) if g else 0 for g in match.groups())
    if match.group(1) is not None:
        return ((days * 24 + d_hours) * 60 + d_minutes) * 60 + d_seconds
    if match.group(7) is not None:  # hours:minutes:seconds
        return (minutes * 60 + m_seconds) * 60 + h_seconds
    return minutes * 60 + m_seconds


@dataclass(frozen=True)
class SlurmJob:
    """What the array job asks SLURM for, and how each task starts its worker; validated when made."""

    tasks: int
    runs_dir: Path = RUNS_DIR
    artifact_dir: Path | None = None
    time_limit: str | None = None
    partition: str | None = None
    account: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = SLURM_CPUS_PER_TASK
    signal_grace: int = SLURM_SIGNAL_GRACE_S
    sbatch_lines: tuple[str, ...] = ()
    worker_command: str = "spheroid-hpo"
    heartbeat_interval: int | None = None
    dry_run: bool = False

    def __post_init__(self) -> None:
        for name, low in (("tasks", 1), ("gpus_per_task", 0), ("cpus_per_task", 1), ("signal_grace", 1)):
            if getattr(self, name) < low:
                raise InputError(f"--{name.replace('_', '-')} must be at least {low}, but got {getattr(self, name)}")
        if self.signal_grace > MAX_SIGNAL_GRACE_S:
            raise InputError(f"--signal-grace must be at most {MAX_SIGNAL_GRACE_S} s (SLURM's limit), "
                             f"but got {self.signal_grace}")
        if self.time_limit is not None and time_limit_seconds(self.time_limit) <= self.signal_grace:
            raise InputError(
                f"--time {self.time_limit} leaves no time before the warning signal {self.signal_grace} s ahead of "
                "its end; give a longer --time or a shorter --signal-grace"
            )
        for name in ("partition", "account"):
            value = getattr(self, name)
            if value is not None and not re.fullmatch(r"[\w.,+-]+", value):
                raise InputError(f"--{name} {value!r} is not a SLURM {name} name (letters, digits, _ . , + -)")
        for line in self.sbatch_lines:
            if not _sbatch_option(line).startswith("-") or "\n" in line or "\r" in line:
                raise InputError(
                    f"--sbatch {line!r} is not one sbatch option; write it as on sbatch's command line, "
                    "e.g. --sbatch=--mem=8G or --sbatch='--constraint=a100'"
                )
        try:
            words = shlex.split(self.worker_command)
        except ValueError as error:
            raise InputError(f"--worker-command {self.worker_command!r} does not parse as a command: {error}") from None
        if not words:
            raise InputError("--worker-command is empty; give the program that runs spheroid-hpo, e.g. spheroid-hpo")


@dataclass(frozen=True)
class SlurmSubmission:
    """The job script written for a study, and the job id SLURM gave it (None for a dry run)."""

    study_name: str
    storage_url: str
    script: str
    script_path: Path | None
    job_id: str | None
    runs_dir: Path
    artifact_dir: Path
    log_dir: Path


def _sbatch_option(line: str) -> str:
    """``#SBATCH --mem=8G`` or ``--mem=8G`` -> ``--mem=8G``."""
    return line.strip().removeprefix("#SBATCH").strip()


def _absolute(config: StudyConfig) -> StudyConfig:
    """``config`` with its data folder absolute: tasks may start in another working directory."""
    if config.data.path is None:
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, path=Path(config.data.path).resolve()))


def _folders(config: StudyConfig, job: SlurmJob) -> tuple[Path, Path, Path]:
    """The runs, artifact and log folders of the job, absolute: tasks may start in another working directory."""
    workspace = Workspace.of(config.name, runs_dir=Path(job.runs_dir).resolve(), artifact_dir=job.artifact_dir)
    return workspace.runs_dir, workspace.artifact_dir.resolve(), workspace.logs


def job_script(config: StudyConfig, job: SlurmJob, *, storage_url: str) -> str:
    """The ``sbatch`` script whose array tasks each run one worker of ``config``'s study; no password in it."""
    bare_url, _ = split_password(storage_url)
    runs_dir, artifact_dir, log_dir = _folders(config, job)
    arguments = worker_arguments(
        config=_absolute(config), storage_url=bare_url, artifact_dir=artifact_dir, runs_dir=runs_dir,
        device="cuda" if job.gpus_per_task else "cpu", threads=job.cpus_per_task,
        heartbeat_interval=job.heartbeat_interval,
    )
    options = [
        f"--job-name=spheroid-hpo-{config.name}",
        f"--array=0-{job.tasks - 1}",
        "--ntasks=1",
        f"--cpus-per-task={job.cpus_per_task}",
    ]
    if job.gpus_per_task:
        options.append(f"--gres=gpu:{job.gpus_per_task}")
    if job.time_limit is not None:
        options.append(f"--time={job.time_limit}")
    if job.partition is not None:
        options.append(f"--partition={job.partition}")
    if job.account is not None:
        options.append(f"--account={job.account}")
    options += [
        # B: signals the batch shell, which `exec` below makes the worker itself.
        f"--signal=B:TERM@{job.signal_grace}",
        f"--output={shlex.quote(f'{log_dir}/slurm-%A_%a.log')}",  # sbatch reads #SBATCH values as a shell would
        "--open-mode=append",
        *(_sbatch_option(line) for line in job.sbatch_lines),
    ]
    command = shlex.join([*shlex.split(job.worker_command), *arguments])
    threads = job.cpus_per_task
    return "\n".join([
        "#!/bin/bash",
        f"# Written by `spheroid-hpo slurm` for study {config.name}: {job.tasks} workers, one per array task.",
        "# The storage password is not in this file: the tasks read PGPASSWORD from the environment sbatch",
        "# passes on (--export=ALL), or ~/.pgpass (mode 0600) on the shared home folder.",
        *(f"#SBATCH {option}" for option in options),
        "set -eu",
        f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}",
        f"exec {command}",
        "",
    ])


def submit(config: StudyConfig, job: SlurmJob) -> SlurmSubmission:
    """Create ``config``'s study in its (PostgreSQL) storage, write the job script, submit it with ``sbatch``.

    With ``job.dry_run`` only the script is made: no study is created, no file written, nothing submitted.
    """
    storage_url = config.storage or ""
    # PostgreSQL only: its password alone is kept out of the script (split_password, PGPASSWORD).
    if not storage_url.startswith("postgresql"):
        given = f"storage {masked_url(storage_url)}" if storage_url else "the default SQLite file"
        raise InputError(
            f"SLURM tasks run on other nodes, which cannot share {given}; pass --storage "
            "postgresql+psycopg://USER@HOST:5432/DB, a PostgreSQL server every node reaches"
        )
    runs_dir, artifact_dir, log_dir = _folders(config, job)
    script = job_script(config, job, storage_url=storage_url)
    if job.dry_run:
        return SlurmSubmission(study_name=config.name, storage_url=storage_url, script=script, script_path=None,
                               job_id=None, runs_dir=runs_dir, artifact_dir=artifact_dir, log_dir=log_dir)
    sbatch = shutil.which("sbatch")
    if sbatch is None:  # checked before the study is created: nothing half done
        raise InputError("sbatch is not on PATH: run `spheroid-hpo slurm` on the cluster's login node "
                         "(or load its slurm module), or pass --dry-run to only print the job script")
    create_study_family(config=config, runs_dir=runs_dir)
    # SLURM does not create the folder of --output: a task whose log folder is missing fails silently.
    log_dir.mkdir(parents=True, exist_ok=True)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    script_path = write_text_atomically(runs_dir / config.name / SCRIPT_NAME, script)
    _, password = split_password(storage_url)
    environment = {**os.environ, **({"PGPASSWORD": password} if password is not None else {})}
    result = subprocess.run([sbatch, "--parsable", "--export=ALL", str(script_path)], capture_output=True,
                            text=True, env=environment, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        reason = (result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}").splitlines()
        raise InputError(
            f"sbatch refused the job script {script_path}: {reason[-1]}; the study is created and nothing is lost: "
            "fix the option and run the same command again"
        )
    job_id = result.stdout.strip().split(";")[0]  # --parsable prints "id" or "id;cluster"
    return SlurmSubmission(study_name=config.name, storage_url=storage_url, script=script, script_path=script_path,
                           job_id=job_id, runs_dir=runs_dir, artifact_dir=artifact_dir, log_dir=log_dir)


def next_steps(submission: SlurmSubmission) -> str:
    """How to watch the submitted job, see its trials, go on after it ends and get the report."""
    url = masked_url(submission.storage_url)
    job = submission.job_id
    return "\n".join([
        f"submitted job {job}: the workers of study {submission.study_name}, script {submission.script_path}",
        f"watch:     squeue -j {job}   (logs: {submission.log_dir}/slurm-{job}_*.log)",
        f"dashboard: spheroid-hpo dashboard --storage {url} --artifacts {submission.artifact_dir}",
        f"report:    spheroid-hpo report --storage {url} --study {submission.study_name} "
        f"--artifacts {submission.artifact_dir} --runs-dir {submission.runs_dir}",
        "after the job ends (time limit, preemption, scancel), run the same command again: finished trials are "
        "kept, interrupted ones go on from their checkpoints",
    ])
