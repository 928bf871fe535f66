"""Results of a study: ``report``, ``export-best`` and ``reproduce``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spheroid_hpo.cli._app import app, clean_up_on_sigterm
from spheroid_hpo.defaults import RUNS_DIR

_STORAGE_HELP = "Storage URL the study ran on; default sqlite:///runs/<study>/study.db."
_ARTIFACTS_HELP = "Artifact folder the workers wrote models to; default runs/<study>/artifacts."
_DATA_HELP = "This machine's copy of the study's data folder; default the recorded folder or the demo data."


@app.command("report")
def report_command(
    study: Annotated[Optional[str], typer.Option(help="Study name; needed when the storage holds several.")] = None,
    storage: Annotated[Optional[str], typer.Option(help=_STORAGE_HELP)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Report folder; default runs/<study>/report.")] = None,
    artifacts: Annotated[Optional[Path], typer.Option(help=_ARTIFACTS_HELP)] = None,
    data: Annotated[Optional[Path], typer.Option(help=_DATA_HELP)] = None,
    repeats: Annotated[int, typer.Option(min=0, help="Retrain each best configuration with K seeds and compare "
                                                     "the architectures paired by seed (0: no retraining).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N, for testing and retraining.")] = "auto",
    runs_dir: Annotated[Path, typer.Option(help="Folder holding the study's runs and demo data.")] = RUNS_DIR,
) -> None:
    """The paper's Table III from each architecture's best trial, scored once on the test split."""
    from spheroid_hpo.results.report import report_output_names, write_report

    clean_up_on_sigterm()

    result = write_report(
        study=study, storage_url=storage, out_dir=out, artifact_dir=artifacts, runs_dir=runs_dir, data_dir=data,
        repeats=repeats, device=device, progress=True,
    )
    for row in result.tuned:
        typer.echo(f"{row.architecture:<22} trial #{row.trial_number:<4} test macro-F1 {row.mean_f1:.3f}  "
                   f"(val {row.val_macro_f1:.3f})")
    typer.echo(f"wrote {result.out_dir}/{', '.join(report_output_names())} ({result.seconds:.0f} s)")


@app.command("export-best")
def export_best_command(
    study: Annotated[Optional[str], typer.Option(help="Study name; needed when the storage holds several.")] = None,
    storage: Annotated[Optional[str], typer.Option(help=_STORAGE_HELP)] = None,
    artifacts: Annotated[Optional[Path], typer.Option(help=_ARTIFACTS_HELP)] = None,
    data: Annotated[Optional[Path], typer.Option(help=_DATA_HELP)] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Retrain the winner with this many seeds and record the "
                                                      "spread of its scores (default 5).")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads the trial trained with, if the trial "
                                                               "did not record it (launch: cores / workers).")] = None,
    device: Annotated[str, typer.Option(help="Device to score and retrain on.")] = "auto",
    runs_dir: Annotated[Path, typer.Option(help="Folder holding the study's runs and demo data.")] = RUNS_DIR,
) -> None:
    """Print the best configuration over all architectures as TOML (redirect it to studies/best.toml).

    The winner is retrained with --seeds seeds (progress on stderr) and the spread of its scores recorded.
    """
    from spheroid_hpo.results.reproduce import export_best

    clean_up_on_sigterm()

    best = export_best(
        study=study, storage_url=storage, artifact_dir=artifacts, runs_dir=runs_dir, data_dir=data,
        seeds=seeds, threads=threads, device=device,
    )
    typer.echo(best.to_toml(), nl=False)


@app.command("reproduce")
def reproduce_command(
    best_file: Annotated[Path, typer.Argument(help="A best.toml written by export-best.")],
    data: Annotated[Optional[Path], typer.Option(help="This machine's copy of the data folder (not for demo data).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Keep the retrained run folder (model.pt, metrics.json) here.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N; default the kind the seeds were "
                                                       "recorded on.")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Retrain only the first N recorded seeds when the band rule "
                                                      "applies (default: all).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: the recorded count).")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder for the regenerated demo data.")] = RUNS_DIR,
) -> None:
    """Retrain a best.toml and decide by its rule: exit 0 reproduced, 1 not reproduced, 2 a bad file."""
    from spheroid_hpo.results.reproduce import reproduce

    clean_up_on_sigterm()

    result = reproduce(path=best_file, data_dir=data, runs_dir=runs_dir, out_dir=out, device=device, seeds=seeds,
                       threads=threads)
    typer.echo(result.format_table())
    raise typer.Exit(0 if result.reproduced else 1)
