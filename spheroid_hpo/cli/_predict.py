"""``spheroid-hpo predict``: classify new images with a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spheroid_hpo.cli._app import app


@app.command("predict")
def predict_command(
    inputs: Annotated[list[Path], typer.Argument(help="Image files and folders (walked recursively).")],
    model: Annotated[Path, typer.Option(help="A model.pt, a run folder holding one (train, reproduce --out), or an "
                                             "ONNX file from `spheroid-hpo export --format onnx`.")],
    out: Annotated[Path, typer.Option(help="CSV to write: path, predicted class, probability per class, error.")] = Path("predictions.csv"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    calibration: Annotated[bool, typer.Option("--calibration/--no-calibration", help="Probabilities scaled by the "
                                              "temperature fitted on validation; --no-calibration: raw softmax.")] = True,
    tta: Annotated[bool, typer.Option("--tta", help="Average over the 8 rotations/flips; adds agreement, entropy "
                                                    "and an uncertain flag.")] = False,
) -> None:
    """Predict the class of each image; unreadable files get a row with the reason."""
    from spheroid_hpo.results.export import format_for_file
    from spheroid_hpo.training.predict import predict_images

    exported = format_for_file(model)  # an exported file predict reads back (ONNX), or None for a model.pt
    summary = predict_images(model=model, inputs=inputs, out=out, device=device, calibrated=calibration, tta=tta,
                             reader=exported.read if exported is not None else None)
    problems = f", {summary.errors} could not be read (see the error column)" if summary.errors else ""
    typer.echo(f"wrote {summary.out}: {summary.images} images{problems}")
