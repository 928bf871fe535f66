"""Files a trial left in the artifact store: its model and its per-epoch history."""

from __future__ import annotations

import csv
from pathlib import Path

from optuna.artifacts import download_artifact, get_all_artifact_meta
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from spheroid_hpo.errors import InputError
from spheroid_hpo.tuning.records import HISTORY_ARTIFACT, RunRecord


def download_model(trial: FrozenTrial, *, artifact_store, artifact_dir: Path, study_name: str, folder: Path) -> Path:
    """Download the trial's ``model.pt`` into ``folder``; InputError naming the fix when it is missing."""
    artifact_id = RunRecord.of(trial).model_artifact_id
    if artifact_id is None:
        raise InputError(
            f"trial {trial.number} of study {study_name} has no model artifact recorded; it finished before "
            f"models were stored, so rerun the study to report it"
        )
    target = Path(folder) / f"{study_name}-trial-{trial.number}-model.pt"
    if not target.exists():
        try:
            download_artifact(artifact_store=artifact_store, file_path=str(target), artifact_id=artifact_id)
        except ArtifactNotFound:
            target.unlink(missing_ok=True)
            raise InputError(
                f"the model of trial {trial.number} of study {study_name} (artifact {artifact_id}) is not in the "
                f"artifact folder {artifact_dir}; pass --artifacts with the folder the workers wrote to"
            ) from None
    return target


def download_history(
    trial: FrozenTrial, *, storage: BaseStorage, artifact_store, folder: Path, study_name: str
) -> list[dict[str, float]] | None:
    """The trial's per-epoch history rows, or None when it stored none (or the file is gone)."""
    metas = [m for m in get_all_artifact_meta(trial, storage=storage) if m.filename == HISTORY_ARTIFACT]
    if not metas:
        return None
    target = Path(folder) / f"{study_name}-trial-{trial.number}-{HISTORY_ARTIFACT}"
    if not target.exists():
        try:
            download_artifact(artifact_store=artifact_store, file_path=str(target), artifact_id=metas[-1].artifact_id)
        except ArtifactNotFound:
            target.unlink(missing_ok=True)
            return None
    with open(target, newline="") as handle:
        return [_numbers(row) for row in csv.DictReader(handle)]


def _numbers(row: dict[str, str]) -> dict[str, float]:
    values = {}
    for key, text in row.items():
        if text in ("True", "False"):
            values[key] = text == "True"
        else:
            values[key] = float(text) if text not in ("", None) else None
    return values
