"""The images a study was tuned on, split exactly as its trials saw them (for the report)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from spheroid_hpo.data import Dataset
from spheroid_hpo.report._family import StudyFamily
from spheroid_hpo.study_data import load_study_dataset, resolve_data_dir, write_manifest_text


def study_data_dir(family: StudyFamily, *, data_dir: Path | None, runs_dir: Path) -> Path:
    """This machine's copy of the study's data: ``data_dir``, the recorded folder, or the demo set rebuilt."""
    return resolve_data_dir(family.data, data_dir=data_dir, runs_dir=runs_dir, study_name=family.name)


def write_study_manifest(family: StudyFamily, path: Path) -> Path:
    """Write the study's split manifest (path,class,split[,group]) to ``path``."""
    return write_manifest_text(path, family.manifest_csv)


def load_study_data(
    family: StudyFamily, *, data_dir: Path, manifest_path: Path, splits: Sequence[str]
) -> Dataset:
    """Decode ``splits`` of the study's data with the study's own split; refuse other data."""
    return load_study_dataset(
        study_name=family.name, record=family.data, manifest_csv=family.manifest_csv,
        manifest_path=manifest_path, data_dir=data_dir, runs_dir=Path("."), splits=splits,
    )
