"""The images a study was tuned on, split exactly as its trials saw them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from spheroid_hpo.data import Dataset, load_dataset
from spheroid_hpo.demo_data import demo_data_dir, ensure_demo_data
from spheroid_hpo.errors import InputError
from spheroid_hpo.report._family import StudyFamily


def study_data_dir(family: StudyFamily, *, data_dir: Path | None, runs_dir: Path) -> Path:
    """This machine's copy of the study's data: ``data_dir``, the recorded folder, or the demo set rebuilt."""
    if data_dir is not None:
        return Path(data_dir)
    if family.data["path"] is not None:
        recorded = Path(family.data["path"])
        if not recorded.is_dir():
            raise InputError(
                f"study {family.name} was tuned on {recorded}, which this machine does not have; "
                f"pass --data with this machine's copy of that folder"
            )
        return recorded
    demo = family.data["demo"]
    # The generator writes the same bytes for the same settings, so the fingerprint check below holds.
    return ensure_demo_data(demo_data_dir(runs_dir, **demo), **demo)


def write_study_manifest(family: StudyFamily, path: Path) -> Path:
    """Write the study's split manifest (path,class,split[,group]) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(family.manifest_csv)
    return path


def load_study_data(
    family: StudyFamily, *, data_dir: Path, manifest_path: Path, splits: Sequence[str]
) -> Dataset:
    """Decode ``splits`` of the study's data with the study's own split; refuse other data."""
    dataset = load_dataset(
        data_dir, image_size=int(family.data["image_size"]), manifest_path=manifest_path, splits=splits
    )
    if dataset.fingerprint != family.data["fingerprint"]:
        raise InputError(
            f"data folder {data_dir} differs from the data study {family.name} was tuned on (fingerprint "
            f"{dataset.fingerprint[:12]} != {family.data['fingerprint'][:12]}); pass --data with the same images"
        )
    return dataset
