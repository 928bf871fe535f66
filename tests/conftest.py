"""Shared fixtures: a tiny generated data set and a tiny finished study in a real SQLite file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from study_files import write_tiny_study

from spheroid_hpo.data.demo import write_demo_data
from spheroid_hpo.tuning.study_file import load_study_config

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
    from spheroid_hpo.tuning.launch import launch

    folder = tmp_path_factory.mktemp("study")
    study_file = write_tiny_study(folder, n_trials=3)
    runs_dir = folder / "runs"
    config = load_study_config(study_file)
    summary = launch(config=config, workers=1, runs_dir=runs_dir)
    assert summary.worker_exit_codes == [0]
    return FinishedStudy(
        name=config.name, storage_url=summary.storage_url, artifact_dir=summary.artifact_dir,
        runs_dir=runs_dir, study_file=study_file,
    )
