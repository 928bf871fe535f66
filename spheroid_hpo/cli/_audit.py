"""``spheroid-hpo audit-labels``: suspect labels of a study's winner or a run folder, found with cleanlab."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spheroid_hpo.cli._app import app, clean_up_on_sigterm
from spheroid_hpo.defaults import AUDIT_FOLDS, AUDIT_PAGE_SUSPECTS, RUNS_DIR


@app.command("audit-labels")
def audit_labels_command(
    run: Annotated[Optional[Path], typer.Argument(help="A run folder made by `spheroid-hpo train`; or leave out and pass --study.")] = None,
    study: Annotated[Optional[str], typer.Option(help="Audit the winner (best trial over all architectures) of this study.")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Storage URL of --study; default sqlite:///runs/<study>/study.db.")] = None,
    folds: Annotated[Optional[int], typer.Option(help=f"Folds of train+val to retrain for out-of-sample probabilities (default {AUDIT_FOLDS}; a cross-validated study uses its own).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for suspects.csv, audit.html and audit.json; default runs/<study>/audit or RUN/audit.")] = None,
    top: Annotated[int, typer.Option(help="Suspects shown as thumbnails on audit.html.")] = AUDIT_PAGE_SUSPECTS,
    data: Annotated[Optional[Path], typer.Option(help="This machine's copy of the data folder; default the recorded one.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N, for the retrainings.")] = "auto",
    runs_dir: Annotated[Path, typer.Option(help="Folder holding the study's runs and demo data.")] = RUNS_DIR,
) -> None:
    """Rank the train and validation images whose label is probably wrong (progress on stderr). The test split is never read."""
    from spheroid_hpo.results.audit import AuditRequest, audit_labels

    clean_up_on_sigterm()
    result = audit_labels(AuditRequest(run_dir=run, study=study, storage_url=storage, runs_dir=runs_dir, data_dir=data,
                                       out=out, folds=folds, top=top, device=device))
    typer.echo(f"{len(result.suspects)} suspect(s) of {len(result.held_out.paths)} images; wrote "
               f"{result.out_dir}/suspects.csv, audit.html, audit.json ({result.seconds:.0f} s)")
