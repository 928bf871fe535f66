"""The Typer application every command module registers on, and small parsers they share."""

from __future__ import annotations

import signal

import typer

from spheroid_hpo.errors import InputError

app = typer.Typer(
    help="Hyperparameter optimisation for CNNs that classify microscopy images of cell spheroids.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def clean_up_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks and temporary folders clean up.

    By default SIGTERM ends Python at once, leaving staging and temporary folders behind.
    """
    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


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
