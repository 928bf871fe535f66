"""``slurm``: create the study once and submit its workers as one SLURM array job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spheroid_hpo.cli._app import app
from spheroid_hpo.defaults import RUNS_DIR, SLURM_CPUS_PER_TASK, SLURM_SIGNAL_GRACE_S


@app.command("slurm")
def slurm_command(
    tasks: Annotated[int, typer.Option(min=1, help="Array tasks, one worker each.")],
    study: Annotated[Path, typer.Option(help="Study file (TOML) with the search space and budget.")],
    storage: Annotated[Optional[str], typer.Option(help="PostgreSQL URL every node reaches; a password here goes to the tasks by environment, never into the script.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Data folder on the shared file system; overrides the study file.")] = None,
    artifacts: Annotated[Optional[Path], typer.Option(help="Artifact folder on the shared file system (checkpoints go beside it); default runs/<study>/artifacts.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder on the shared file system for the split, logs and the job script.")] = RUNS_DIR,
    n_trials: Annotated[Optional[int], typer.Option(min=1, help="Trials per architecture; overrides the study file.")] = None,
    time: Annotated[Optional[str], typer.Option("--time", help="Time limit of each task, as sbatch takes it (e.g. 4:00:00).")] = None,
    partition: Annotated[Optional[str], typer.Option(help="SLURM partition.")] = None,
    account: Annotated[Optional[str], typer.Option(help="SLURM account to charge.")] = None,
    gpus: Annotated[int, typer.Option(min=0, help="GPUs per task (--gres=gpu:N); 0 trains on the CPU.")] = 0,
    cpus: Annotated[int, typer.Option(min=1, help="CPU cores per task: the worker's threads.")] = SLURM_CPUS_PER_TASK,
    signal_grace: Annotated[int, typer.Option(min=1, help="Seconds before the time limit when SLURM sends SIGTERM; the worker stops its trial cleanly.")] = SLURM_SIGNAL_GRACE_S,
    sbatch: Annotated[Optional[list[str]], typer.Option(help="Extra sbatch option, written as an #SBATCH line (repeatable), e.g. --sbatch=--mem=16G.")] = None,
    worker_command: Annotated[str, typer.Option(help="How a task starts spheroid-hpo, e.g. '/shared/venv/bin/spheroid-hpo'.")] = "spheroid-hpo",
    heartbeat_interval: Annotated[Optional[int], typer.Option(min=1, help="Seconds between trial heartbeats.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the job script; create no study, submit nothing.")] = False,
) -> None:
    """Create the study once, then run N workers as the tasks of one SLURM array job."""
    from spheroid_hpo.tuning.slurm import SlurmJob, next_steps, submit
    from spheroid_hpo.tuning.study_file import load_study_config

    job = SlurmJob(
        tasks=tasks, runs_dir=runs_dir, artifact_dir=artifacts, time_limit=time, partition=partition,
        account=account, gpus_per_task=gpus, cpus_per_task=cpus, signal_grace=signal_grace,
        sbatch_lines=tuple(sbatch or ()), worker_command=worker_command, heartbeat_interval=heartbeat_interval,
        dry_run=dry_run,
    )
    config = load_study_config(study, data=data, storage=storage, n_trials=n_trials)
    submission = submit(config, job)
    if dry_run:
        typer.echo(submission.script, nl=False)
        typer.echo("# dry run: no study created, nothing submitted", err=True)
        return
    typer.echo(next_steps(submission))
