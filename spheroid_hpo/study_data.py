"""The images a study was created on, found on this machine and split exactly as its trials saw them.

A study records its data (a folder, or the demo generator's settings), the split
manifest and a fingerprint of both. Workers, the report and ``reproduce`` all load
data through here, so each refuses a folder that is not the study's.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from spheroid_hpo.data import Dataset, load_dataset
from spheroid_hpo.demo_data import demo_data_dir, ensure_demo_data
from spheroid_hpo.errors import InputError


def resolve_data_dir(record: Mapping, *, data_dir: Path | None, runs_dir: Path, study_name: str) -> Path:
    """This machine's copy of the study's data: ``data_dir``, the recorded folder, or the demo set rebuilt."""
    if data_dir is not None:
        return Path(data_dir)
    if record["path"] is not None:
        recorded = Path(record["path"])
        if not recorded.is_dir():
            raise InputError(
                f"study {study_name} was created on {recorded}, which this machine does not have; "
                f"pass --data with this machine's copy of that folder"
            )
        return recorded
    demo = record["demo"]
    # The generator writes the same bytes for the same settings, so the fingerprint check holds.
    return ensure_demo_data(demo_data_dir(runs_dir, **demo), **demo)


def write_manifest_text(path: Path, text: str) -> Path:
    """Write the study's manifest CSV to ``path`` unless it already holds exactly that text."""
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Several workers on one machine may write at once: each renames its own complete file.
    partial = path.with_name(f"{path.name}.{socket.gethostname()}.{uuid.uuid4().hex[:8]}.partial")
    partial.write_text(text)
    os.replace(partial, path)
    return path


def load_study_dataset(
    *,
    study_name: str,
    record: Mapping,
    manifest_csv: str,
    manifest_path: Path,
    data_dir: Path | None,
    runs_dir: Path,
    splits: Sequence[str],
    progress: bool = False,
) -> Dataset:
    """Decode ``splits`` of the study's data with the study's own split; refuse other data."""
    folder = resolve_data_dir(record, data_dir=data_dir, runs_dir=runs_dir, study_name=study_name)
    write_manifest_text(manifest_path, manifest_csv)
    dataset = load_dataset(
        folder, image_size=int(record["image_size"]), manifest_path=manifest_path, splits=splits, progress=progress
    )
    if dataset.fingerprint != record["fingerprint"]:
        raise InputError(
            f"data folder {folder} differs from the data study {study_name} was created on "
            f"(fingerprint {dataset.fingerprint[:12]} != {record['fingerprint'][:12]}); "
            f"pass --data with the same images (same files, classes and sizes)"
        )
    return dataset
