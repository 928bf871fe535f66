"""The ``spheroid-hpo`` command line: each command parses, then calls one library function.

Commands live in one small module per concern and register themselves on ``app``.
"""

from __future__ import annotations

from spheroid_hpo.cli._app import app
from spheroid_hpo.cli._main import main

# Importing the command modules registers their commands on ``app``.
from spheroid_hpo.cli import (  # noqa: E402,F401  isort: skip
    _audit, _create, _dashboard, _data, _export, _predict, _report, _slurm, _train, _tune,
)

__all__ = ["app", "main"]
