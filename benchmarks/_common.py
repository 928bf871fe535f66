"""What every benchmark prints besides its numbers: the machine, the date, the load.

Benchmarks compare our pipeline with a baseline run in the same process on the
same data, so the ratio survives a noisy machine better than either number; the
load average printed before and after says how noisy it was.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from spheroid_hpo.errors import InputError


def cpu_model() -> str:
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_features() -> str:
    """The CPU features that decide the precision ``auto`` picks (see training.device.resolve_precision)."""
    flags = []
    if torch.cpu._is_avx512_bf16_supported():
        flags.append("AVX-512 BF16")
    if torch.cpu._is_amx_tile_supported():
        flags.append("AMX")
    return ", ".join(flags) or "no native bf16"


def describe_machine(device: torch.device) -> str:
    """One line naming the hardware the figures come from, for BENCHMARKS.md."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        hardware = f"GPU {torch.cuda.get_device_name(index)}; host CPU {cpu_model()} ({cpu_count()} cores)"
    else:
        hardware = f"CPU {cpu_model()} ({cpu_count()} cores; {cpu_features()})"
    return (
        f"{hardware}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{datetime.date.today().isoformat()}"
    )


def load_average() -> str:
    """The 1-minute load average against the core count: a busy machine makes every figure noisier."""
    if not hasattr(os, "getloadavg"):
        return "load average unknown"
    return f"load average {os.getloadavg()[0]:.1f} on {cpu_count()} cores"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table (numbers right-aligned), easy to paste into Markdown as a code block."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for number, row in enumerate(cells):
        lines.append("  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths))
        ))
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``; a bad option (say, --device cuda without a GPU) ends in one line."""
    try:
        main()
    except InputError as error:
        sys.exit(f"error: {error}")
