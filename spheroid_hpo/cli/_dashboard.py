"""``spheroid-hpo dashboard``: watch a study in the browser."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spheroid_hpo.cli._app import app
from spheroid_hpo.defaults import RUNS_DIR


@app.command("dashboard")
def dashboard_command(
    storage: Annotated[Optional[str], typer.Option(help="Storage URL; default sqlite:///runs/<study>/study.db.")] = None,
    study: Annotated[Optional[str], typer.Option(help="Study name (the study file's name), e.g. quickstart.")] = None,
    artifacts: Annotated[Optional[Path], typer.Option(help="Artifact folder the workers wrote; default runs/<study>/artifacts.")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 exposes the dashboard to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one.")] = 8080,
    runs_dir: Annotated[Path, typer.Option(help="Folder holding runs/<study>/ for the defaults.")] = RUNS_DIR,
) -> None:
    """Serve optuna-dashboard on the study storage, with each trial's curves and confusion matrix."""
    from spheroid_hpo.tuning.dashboard import serve_dashboard

    serve_dashboard(storage_url=storage, study=study, artifact_dir=artifacts, host=host, port=port, runs_dir=runs_dir)
