"""Polling with a generous limit, for tests of real processes (import as `from waiting import wait_for`).

A busy machine (another job beside the tests) makes a process start and train several times
slower, so limits are generous and nothing waits a fixed time where it can poll; when a wait
does time out, the failure says what it waited for, what it saw last, and what ``explain``
adds (a process's output, a log's tail), so it can be told apart from a bug in one screen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1,
             explain: Callable[[], str] | None = None) -> Any:
    """Poll ``condition`` every ``interval`` s until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        seen = condition()
        if seen:
            return seen
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    details = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last saw {seen!r}{details}")


def tail(text: str | bytes | None, limit: int = 3000) -> str:
    """The last ``limit`` characters of a process's output (which may be bytes, or None when not captured)."""
    if text is None:
        return "(not captured)"
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-limit:] or "(empty)"
