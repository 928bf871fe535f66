"""Creating a study in storage without running it: the first step of a distributed run.

``spheroid-hpo create`` does what ``launch`` does before it starts workers: it
prepares the data's split and creates one Optuna study per architecture,
recording on them all a worker needs. Workers on any machine then join with
``spheroid-hpo worker --storage URL --study NAME``; docker-compose runs it once
before its worker containers start.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import optuna

from spheroid_hpo.data import DataSource, SplitSpec, check_fold_count, data_folder, prepare_split, read_manifest
from spheroid_hpo.defaults import RUNS_DIR
from spheroid_hpo.errors import InputError
from spheroid_hpo.training.models import check_weights
from spheroid_hpo.tuning.storage import open_storage, split_password
from spheroid_hpo.tuning.studies import create_studies
from spheroid_hpo.tuning.study_file import StudyConfig, parse_study_text
from spheroid_hpo.tuning.workspace import Workspace


@dataclass(frozen=True)
class CreatedStudies:
    """The per-architecture studies of one study file, in storage and ready for workers."""

    study_name: str
    storage_url: str
    studies: dict[str, optuna.Study]  # architecture -> its Optuna study
    data: DataSource
    manifest_csv: str


def create_study_family(*, config: StudyConfig, runs_dir: Path = RUNS_DIR) -> CreatedStudies:
    """Create (or reopen, to resume) ``config``'s studies in its storage; start no worker.

    The split manifest is written to ``runs_dir/<study>/splits.csv`` (the data
    folder may be read-only) and recorded on the studies with the data's
    fingerprint, so a worker with its own copy of the data can check it has the
    same images.
    """
    storage_url = Workspace.of(config.name, runs_dir=runs_dir, storage_url=config.storage).storage_url
    # A missing, junk or mismatched weights file fails here, before the storage is created,
    # instead of failing every trial of the study one after another.
    check_weights(config.training.weights, architectures=config.architectures)
    # Storage next: a wrong URL fails at once instead of after the data is scanned.
    storage = open_storage(storage_url, heartbeat_interval=None)
    data, manifest_csv = prepare_data(config, runs_dir=runs_dir)
    if config.data.cv_folds is not None:  # here, not in every worker: one line, before any worker starts
        rows = read_manifest(Path(_study_split(config, runs_dir=runs_dir).manifest))
        check_fold_count([row.class_name for row in rows if row.split in ("train", "val")], config.data.cv_folds)
    studies = create_studies(config, storage, study_file_text=_without_password(config), data=data,
                             manifest_csv=manifest_csv)
    return CreatedStudies(study_name=config.name, storage_url=storage_url, studies=studies, data=data,
                          manifest_csv=manifest_csv)


def _without_password(config: StudyConfig) -> str:
    """The study file's text to record in storage, its storage URL's password removed."""
    text = config.source.read_text()
    written = parse_study_text(text, source=config.source).storage  # the file's, not --storage's
    bare, password = split_password(written) if written else (written, None)
    if password is None:
        return text
    text = text.replace(written, bare)
    if password in text:  # written with TOML escapes, say: refuse rather than store it
        raise InputError(
            f"{config.source}: study.storage holds a password; leave it out of the URL and set PGPASSWORD"
        )
    return text


def _study_split(config: StudyConfig, *, runs_dir: Path) -> SplitSpec:
    """The study file's split, made (or read, from ``split_manifest``) into the study's own manifest."""
    spec = config.data.split
    if spec.manifest is not None:
        return spec  # the user's own split: read it, and store its text with the study
    return replace(spec, manifest=str(Workspace.of(config.name, runs_dir=runs_dir).manifest))


def prepare_data(config: StudyConfig, *, runs_dir: Path = RUNS_DIR) -> tuple[DataSource, str]:
    """Find the data folder (or write the demo set) and make the study's split manifest.

    Returns the data as recorded on the studies, and the manifest's CSV text.
    """
    demo = None
    if config.data.path is None:
        demo = {"per_class": config.data.demo.per_class, "size": config.data.demo.size, "seed": config.data.demo.seed}
    folder = data_folder(config.data.path, demo=demo, runs_dir=runs_dir)
    split = prepare_split(folder, _study_split(config, runs_dir=runs_dir))
    source = DataSource(path=None if demo else str(folder.resolve()), demo=demo, image_size=config.data.image_size,
                        fingerprint=split.fingerprint, content=split.content, split_relaxed=split.relaxed)
    return source, split.manifest_path.read_text()
