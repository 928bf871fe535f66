"""Lines a user must see while work goes on: skipped files, duplicates, imbalance, a relaxed split.

They are written straight to stderr, one line each, not through Python's ``warnings`` module:
many lab environments set ``PYTHONWARNINGS=ignore``, under which the line "skipping ... too large
to decode safely" vanished, and a run silently left images out.
"""

from __future__ import annotations

import sys


def notice(message: str) -> None:
    """Print ``warning: <message>`` on one line of stderr (a worker's stderr is its log file)."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
