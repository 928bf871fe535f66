"""A worker's output, copied to its log file by a thread of the launcher, its last error line kept in memory.

A worker on a full disk cannot write its log: the review of issue 26 found the log of a worker
that died of "database or disk is full" empty, and the launcher saying only "see the logs". The
launcher reads the worker's output through a pipe instead, so it can say what happened even when
the log file takes nothing.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import BinaryIO

# How long the launcher waits for the last lines of a worker that has exited.
DRAIN_SECONDS = 5.0


class WorkerOutput:
    """Copies ``stream`` (a worker's stdout and stderr) line by line into ``log_path``; keeps its
    last ``error:`` line (the one line the CLI prints for an error it knows)."""

    def __init__(self, stream: BinaryIO | None, log_path: Path):
        self.log_path = Path(log_path)
        self.last_error: str | None = None
        self._thread = None
        if stream is not None:
            self._thread = threading.Thread(target=self._copy, args=(stream,), daemon=True)
            self._thread.start()

    def _copy(self, stream: BinaryIO) -> None:
        with stream, open(self.log_path, "ab", buffering=0) as log:  # unbuffered: each line written or lost alone
            for line in stream:
                text = line.decode(errors="replace").strip()
                if text.startswith("error:"):
                    self.last_error = text.removeprefix("error:").strip()
                try:
                    log.write(line)
                except OSError:
                    pass  # a full disk: the line is lost from the file, the error line is kept above

    def finish(self) -> str | None:
        """Wait for the worker's last lines; return its last error line, if it printed one."""
        if self._thread is not None:
            self._thread.join(DRAIN_SECONDS)
        return self.last_error
