"""``spheroid-hpo export``: the model as a bioimage.io package, an ONNX file or TorchScript."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spheroid_hpo.cli._app import app
from spheroid_hpo.defaults import RUNS_DIR


@app.command("export")
def export_command(
    format: Annotated[str, typer.Option("--format", help="bioimageio (zip), onnx or torchscript "
                                                        "(spheroid_hpo.results.export's registry).")],
    source: Annotated[Optional[Path], typer.Argument(help="A run folder (train, reproduce --out) or a model.pt; "
                                                          "or leave out and pass --study.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="File to write; default the format's own file name "
                                                     "(model.onnx, ...) next to the model.")] = None,
    study: Annotated[Optional[str], typer.Option(help="Export the best trial of this study instead.")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Storage URL of --study; default "
                                                        "sqlite:///runs/<study>/study.db.")] = None,
    artifacts: Annotated[Optional[Path], typer.Option(help="Artifact folder of --study; default "
                                                           "runs/<study>/artifacts.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="This machine's copy of the data folder, whose test split "
                                                      "checks the export; default the recorded one.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder holding the study's runs and demo data.")] = RUNS_DIR,
) -> None:
    """Export a trained model and check it against PyTorch (bioimage.io: bioimageio.core's test)."""
    from spheroid_hpo.results.export import ExportRequest, export_model

    result = export_model(ExportRequest(
        format=format, out=out, source=source, study=study, storage_url=storage, artifact_dir=artifacts,
        data_dir=data, runs_dir=runs_dir,
    ))
    numbers = ", ".join(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                        for key, value in result.checks.items() if key != "path")
    typer.echo(f"wrote {result.out} from {result.description} ({numbers})")
