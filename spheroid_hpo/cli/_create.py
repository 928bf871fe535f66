"""``create``: put a study in storage for workers to join, without starting any."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spheroid_hpo.cli._app import app
from spheroid_hpo.defaults import RUNS_DIR


@app.command("create")
def create_command(
    study: Annotated[Path, typer.Option(help="Study file (TOML) with the search space and budget.")],
    storage: Annotated[Optional[str], typer.Option(help="Storage URL; default sqlite:///runs/<study>/study.db.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Data folder ROOT/<class>/<image>; overrides the study.")] = None,
    n_trials: Annotated[Optional[int], typer.Option(min=1, help="Trials per architecture; overrides the study.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder for the split manifest and demo data.")] = RUNS_DIR,
) -> None:
    """Create the study's per-architecture studies in storage (or reopen them); workers join later."""
    from spheroid_hpo.tuning.create import create_study_family
    from spheroid_hpo.tuning.storage import masked_url
    from spheroid_hpo.tuning.study_file import load_study_config

    config = load_study_config(study, data=data, storage=storage, n_trials=n_trials)
    family = create_study_family(config=config, runs_dir=runs_dir)
    url = masked_url(family.storage_url)
    typer.echo(f"study {family.study_name} in {url}, data {family.data.path or 'demo'} "
               f"(fingerprint {family.data.fingerprint[:12]}):")
    for optuna_study in family.studies.values():
        typer.echo(f"  {optuna_study.study_name:<40} {len(optuna_study.trials):>4} trials of {config.n_trials}")
    typer.echo(f"start workers on any machine that reaches the storage:\n"
               f"  spheroid-hpo worker --storage {url} --study {family.study_name} --artifacts SHARED/ARTIFACTS")
