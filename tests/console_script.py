"""``spheroid-hpo ARGS`` in the test's own process, through the console-script entry point (import as
``from console_script import run_in_process``).

No interpreter to start, about 5 s saved a command; tests that check the process itself (its exit
under ``PYTHONWARNINGS``, SIGTERM, workers, the import boundary) start one instead.
"""

from __future__ import annotations

import os
import sys

import pytest


def run_in_process(monkeypatch, capsys, *args: str | os.PathLike[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``spheroid-hpo ARGS``; the code as a shell sees it (a message exits 1)."""
    from spheroid_hpo.cli import main

    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:  # Typer's standalone mode always exits
        main()
    code = exit_info.value.code
    captured = capsys.readouterr()
    return (code if isinstance(code, int) else 0 if code is None else 1), captured.out, captured.err
