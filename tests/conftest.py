"""Shared fixtures: a tiny generated data set and a tiny finished study in a real SQLite file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from spheroid_hpo.config import load_study_config
from spheroid_hpo.demo_data import write_demo_data

POSTGRES_URL = os.environ.get(
    "SPHEROID_HPO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

TINY_STUDY = """
[study]
name = "{name}"
architectures = ["squeezenet1_1", "resnet18"]
n_trials = {n_trials}

[search_space]
epochs = {{ low = 2, high = 4 }}
lr = {{ low = 1e-4, high = 3e-3, log = true }}
rotation = {{ low = 0.0, high = 20.0 }}
batch_size = {{ low = 8, high = 16 }}

[baseline]
epochs = 3
lr = 1e-3
rotation = 10.0
batch_size = 12

[sampler]
name = "tpe"
seed = 0
n_startup_trials = 2

[pruner]
name = "{pruner}"
n_startup_trials = 1
n_warmup_steps = 1

[data]
image_size = 32

[data.demo]
per_class = 12
size = 32
seed = 0
"""


def write_tiny_study(folder: Path, *, name: str = "tiny", n_trials: int = 3, pruner: str = "median") -> Path:
    """A study file for two fast architectures on 32 px demo data; returns its path."""
    path = Path(folder) / f"{name}.toml"
    path.write_text(TINY_STUDY.format(name=name, n_trials=n_trials, pruner=pruner))
    return path


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
    from spheroid_hpo.launch import launch

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
