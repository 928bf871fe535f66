"""Shared fixtures (a tiny generated data set, a tiny finished study in a real SQLite file) and two
reporting hooks: a subprocess that timed out shows what it printed, and the default run says
which heavy tests it left out and the command that runs them."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from study_files import write_tiny_study
from waiting import tail

from spheroid_hpo.data.demo import write_demo_data
from spheroid_hpo.tuning.study_file import load_study_config

# One torch thread in the test process unless OMP_NUM_THREADS says otherwise: the tests' nets are
# tiny, and beside one other busy process (CI's other lanes, a second job) two threads spin against
# each other: with a one-thread benchmark running, the default run reached 16% in 7 minutes. Worker
# processes a test launches get their count from the launcher, as in use.
if "OMP_NUM_THREADS" not in os.environ:
    import torch

    torch.set_num_threads(1)

POSTGRES_URL = os.environ.get(
    "SPHEROID_HPO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A small demo data set (32 px, about 12 images per class), written once per session."""
    root = tmp_path_factory.mktemp("demo") / "data"
    write_demo_data(root, per_class=12, size=32, seed=0)
    return root


@dataclass(frozen=True)
class FinishedStudy:
    name: str
    storage_url: str
    artifact_dir: Path
    runs_dir: Path
    study_file: Path


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory) -> FinishedStudy:
    """A real launch (one worker process) of the tiny study, run to the end of its budget."""
    import spheroid_hpo.tuning.launch as launch_module
    from spheroid_hpo.tuning.launch import launch

    folder = tmp_path_factory.mktemp("study")
    study_file = write_tiny_study(folder, n_trials=3)
    runs_dir = folder / "runs"
    config = load_study_config(study_file)
    # Its worker trains on one thread (as each of a launch with a worker per core does), not on every
    # core: beside another busy process two threads spin against each other (this launch took 148 s
    # instead of 19 beside a one-thread benchmark), and the tests that retrain its trials follow suit.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launch_module, "threads_per_worker", lambda workers, cpu_count=None: 1)
        summary = launch(config=config, workers=1, runs_dir=runs_dir)
    assert summary.worker_exit_codes == [0]
    return FinishedStudy(
        name=config.name, storage_url=summary.storage_url, artifact_dir=summary.artifact_dir,
        runs_dir=runs_dir, study_file=study_file,
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A child process that ran past its timeout fails with what it had printed by then, not only its command."""
    report = yield
    error = call.excinfo.value if call.excinfo is not None else None
    if isinstance(error, subprocess.TimeoutExpired):
        report.sections.append((
            f"{' '.join(map(str, error.cmd))[:300]}: timed out after {error.timeout} s",
            f"--- stdout (last 3000 characters)\n{tail(error.output)}\n"
            f"--- stderr (last 3000 characters)\n{tail(error.stderr)}",
        ))
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After a run whose marker expression left heavy tests out (the default one does), say how to run them."""
    # The markers the expression excludes: pyproject.toml's addopts is the one place that lists them.
    excluded = re.findall(r"\bnot\s+(\w+)", config.option.markexpr or "")
    deselected = terminalreporter.stats.get("deselected", [])
    heavy = [item for item in deselected if any(item.get_closest_marker(name) for name in excluded)]
    if heavy:
        terminalreporter.write_line(
            f"{len(heavy)} heavy tests left out; CI runs them too: pytest -m '{' or '.join(excluded)}'"
        )
