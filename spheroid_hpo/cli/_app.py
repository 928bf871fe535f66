"""The Typer application every command module registers on, and small parsers they share."""

from __future__ import annotations

from pathlib import Path

import typer

from spheroid_hpo.errors import InputError

app = typer.Typer(
    help="Hyperparameter optimisation for CNNs that classify microscopy images of cell spheroids.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RUNS_DIR = Path("runs")


def split_names(value: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None stays None."""
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def parse_gpus(value: str | None) -> list[int] | None:
    """``"0,1"`` -> ``[0, 1]``; None stays None (use every visible GPU)."""
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--gpus must be comma-separated GPU indices such as 0,1, but got {value!r}") from None
