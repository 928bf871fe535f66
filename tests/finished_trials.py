"""A finished study's trial as the tests check it: its stored model.pt and one split of the study's data."""

from __future__ import annotations

from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore, download_artifact

from spheroid_hpo.data import load_dataset
from spheroid_hpo.training.saved_model import load_model


def trial_model_and_split(finished_study, family, trial, split: str, folder: Path):
    """The trial's ``model.pt`` as a worker stored it (model, info) and ``split`` of the study's own manifest."""
    model_file = Path(folder) / "model.pt"
    download_artifact(artifact_store=FileSystemArtifactStore(str(finished_study.artifact_dir)),
                      file_path=str(model_file), artifact_id=trial.user_attrs["model_artifact_id"])
    manifest = Path(folder) / "splits.csv"
    manifest.write_text(family.manifest_csv)
    tensors = getattr(load_dataset(next(finished_study.runs_dir.glob("demo-data-*")), image_size=32,
                                   manifest_path=manifest, splits=(split,)), split)
    model, info = load_model(model_file)
    return model, info, tensors
