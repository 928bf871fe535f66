"""The console-script entry point: runs the Typer app, turning user errors into one line and exit 2."""

from __future__ import annotations

import sys
import warnings

import typer

from spheroid_hpo.cli._app import app
from spheroid_hpo.errors import InputError


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    # Optuna marks heartbeats and retries experimental; the warnings mean nothing to our users.
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.showwarning = _show_warning
    try:
        app()
    except InputError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except Exception as error:
        from spheroid_hpo.tuning.storage import fault_message

        message = fault_message(error)
        if message is None:
            raise
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        sys.exit(2)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line a warning ("warning: skipping data/x.png: truncated PNG"), not Python's two.
    print(f"warning: {message}", file=file or sys.stderr, flush=True)
