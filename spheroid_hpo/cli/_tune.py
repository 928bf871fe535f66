"""The tuning service: ``launch`` on this machine and ``worker`` on any machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spheroid_hpo.cli._app import app, parse_gpus
from spheroid_hpo.defaults import RUNS_DIR
from spheroid_hpo.errors import InputError

DEFAULT_STUDY = Path("studies/quickstart.toml")


@app.command("launch")
def launch_command(
    workers: Annotated[int, typer.Option(min=1, help="Worker processes to start on this machine.")] = 1,
    study: Annotated[Path, typer.Option(help="Study file (TOML) with the search space and budget.")] = DEFAULT_STUDY,
    data: Annotated[Optional[Path], typer.Option(help="Data folder ROOT/<class>/<image>; overrides the study file.")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Storage URL; default sqlite:///runs/<study>/study.db.")] = None,
    n_trials: Annotated[Optional[int], typer.Option(help="Trials per architecture; overrides the study file.")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Stop starting trials after this many seconds.")] = None,
    gpus: Annotated[Optional[str], typer.Option(help="GPU indices to spread workers over, e.g. 0,1.")] = None,
    artifacts: Annotated[Optional[Path], typer.Option(help="Artifact folder; default runs/<study>/artifacts.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder for studies, demo data, logs.")] = RUNS_DIR,
    heartbeat_interval: Annotated[Optional[int], typer.Option(min=1, help="Seconds between trial heartbeats.")] = None,
) -> None:
    """Create the studies once and run N workers until every architecture's budget is spent."""
    from spheroid_hpo.tuning.launch import launch, print_launch_summary
    from spheroid_hpo.tuning.study_file import load_study_config

    config = load_study_config(study, data=data, storage=storage, n_trials=n_trials, timeout=timeout)
    summary = launch(
        config=config, workers=workers, gpus=parse_gpus(gpus), artifact_dir=artifacts, runs_dir=runs_dir,
        heartbeat_interval=heartbeat_interval,
    )
    raise typer.Exit(print_launch_summary(summary))


@app.command("worker")
def worker_command(
    storage: Annotated[Optional[str], typer.Option(help="Storage URL of a launched study.")] = None,
    study: Annotated[Optional[str], typer.Option(help="Study name; needed when the storage holds several.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="This machine's copy of the study's data folder.")] = None,
    artifacts: Annotated[Optional[Path], typer.Option(help="Artifact folder shared by all workers.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder for demo data, split manifest, checkpoints.")] = RUNS_DIR,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for this worker.")] = None,
    worker_index: Annotated[Optional[int], typer.Option(
        min=0, help="Distinct per worker: spreads workers over the architectures. Default: from host name and pid.",
    )] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Stop starting trials after this many seconds.")] = None,
    heartbeat_interval: Annotated[Optional[int], typer.Option(min=1, help="Seconds between trial heartbeats.")] = None,
) -> None:
    """Join a launched study and run its trials until every budget is spent."""
    from spheroid_hpo.tuning.worker import default_worker_index, run_worker

    if storage is None and study is None:
        raise InputError("pass --storage URL (and --study NAME when it holds several studies)")
    if worker_index is None:
        worker_index = default_worker_index()
    summary = run_worker(
        study=study, storage_url=storage, data_dir=data, artifact_dir=artifacts, runs_dir=runs_dir,
        device=device, threads=threads, worker_index=worker_index, timeout=timeout,
        heartbeat_interval=heartbeat_interval,
    )
    typer.echo(f"worker {worker_index}: ran {summary.trials_run} trials in {summary.seconds:.0f} s")
