"""Commands about data folders: ``demo-data`` and ``check-data``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from spheroid_hpo.cli._app import app, split_names
from spheroid_hpo.defaults import DEMO_SETTINGS


@app.command("demo-data")
def demo_data_command(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write ROOT/<class>/<image>.png into.")],
    per_class: Annotated[int, typer.Option(help="Mean number of images per class (classes are imbalanced).")] = DEMO_SETTINGS["per_class"],
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = DEMO_SETTINGS["size"],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same files.")] = DEMO_SETTINGS["seed"],
) -> None:
    """Write a synthetic brightfield spheroid data set in the paper's four classes."""
    from spheroid_hpo.data.demo import write_demo_data

    counts = write_demo_data(out_dir, per_class=per_class, size=size, seed=seed)
    for name, count in counts.items():
        typer.echo(f"{name:<20} {count:>5} images")
    typer.echo(f"wrote {sum(counts.values())} images to {out_dir}")


@app.command("check-data")
def check_data_command(
    data_dir: Annotated[Path, typer.Argument(help="Data folder laid out as ROOT/<class name>/<image>.")],
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated class names, in label order.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    split_manifest: Annotated[Optional[Path], typer.Option(help="Split manifest CSV to check for duplicates across splits; default DATA/splits.csv (read, never written).")] = None,
) -> None:
    """Per class: image count, formats, bit depths, size range; every problem file with its reason;
    exact and near-duplicate groups (and those the split manifest puts in two splits); class imbalance."""
    from spheroid_hpo.data import check_data

    report = check_data(data_dir, class_names=split_names(classes), manifest_path=split_manifest)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format_table())
