"""What ``export`` exports: a model file, how it was trained, and real test images to check it on.

A source is a ``train`` or ``reproduce --out`` run folder, a ``model.pt`` (its
folder's ``metrics.json`` says where the data and the split are), or the best
trial of a study (over all its architectures, by validation macro-F1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.data import DEFAULT_MANIFEST_NAME, DEFAULT_SPLIT, SplitSpec, SplitTensors, load_dataset
from spheroid_hpo.errors import InputError
from spheroid_hpo.notices import notice
from spheroid_hpo.training.run import METRICS_FILE, RUN_SPLIT_FILE, run_split_manifest
from spheroid_hpo.training.saved_model import MODEL_FILE, ModelInfo, load_model


@dataclass(frozen=True, eq=False)
class ModelSource:
    """A saved model ready to export, with its training configuration and its test split."""

    model_path: Path
    info: ModelInfo
    description: str  # one line: where the model came from
    config: dict  # the training configuration, as the README of a bioimage.io package shows it
    test: SplitTensors  # images the model never trained on; the exports are checked on them
    data_root: Path


def resolve_source(
    source: Path | None, *, study: str | None, storage_url: str | None, artifact_dir: Path | None,
    data_dir: Path | None, runs_dir: Path, scratch: Path,
) -> ModelSource:
    """The model a user named, with its test images (downloaded into ``scratch`` for a study)."""
    if (source is None) == (study is None):
        raise InputError("pass either a run folder or model.pt, or --study NAME (with --storage URL), not both")
    if study is not None:
        return _study_source(study, storage_url=storage_url, artifact_dir=artifact_dir, data_dir=data_dir,
                             runs_dir=runs_dir, scratch=scratch)
    return _run_source(Path(source), data_dir=data_dir, scratch=scratch)


def _run_source(source: Path, *, data_dir: Path | None, scratch: Path) -> ModelSource:
    model_path = source / MODEL_FILE if source.is_dir() else source
    _, info = load_model(model_path)  # InputError naming the fix when it is not a model file
    metrics_file = model_path.parent / METRICS_FILE
    if not metrics_file.is_file():
        raise InputError(
            f"{model_path} has no metrics.json next to it, so its data and test split are unknown; export the "
            f"run folder that `spheroid-hpo train --out` or `reproduce --out` wrote"
        )
    metrics = _read_metrics(metrics_file)
    config = dict(metrics.get("config") or {})
    folder = Path(data_dir) if data_dir is not None else Path(config.get("data_dir", ""))
    if not folder.is_dir():
        raise InputError(
            f"the data folder the model trained on ({folder}) is not on this machine; pass --data with this "
            f"machine's copy, whose test images check the export"
        )
    manifest = run_split_manifest(model_path.parent)
    if manifest is None:
        # A run from before runs kept their split, whose manifest is gone: split again, into the
        # scratch folder, never into the data folder.
        notice(f"{model_path.parent} holds no {RUN_SPLIT_FILE} and its recorded split manifest is gone; "
               f"the export is checked on a new split of {folder}")
        manifest = scratch / DEFAULT_MANIFEST_NAME
    split = SplitSpec.from_dict(config["split"]) if "split" in config else DEFAULT_SPLIT
    dataset = load_dataset(
        folder, image_size=info.image_size, class_names=info.class_names, splits=("test",), split=split,
        manifest_path=manifest,
    )
    _require_test_images(dataset.test, folder)
    config["calibration"] = metrics.get("calibration")
    return ModelSource(model_path=model_path, info=info, description=f"run folder {model_path.parent}",
                       config=config, test=dataset.test, data_root=dataset.root)


def _read_metrics(path: Path) -> dict:
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read {path} ({error}); export a run folder that train or reproduce --out "
                         f"wrote completely") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("config", {}), dict):
        raise InputError(f"{path} is not a run's metrics.json (expected a JSON object with a 'config' object); "
                         f"export a run folder that train or reproduce --out wrote")
    return metrics


def _study_source(study: str, *, storage_url, artifact_dir, data_dir, runs_dir: Path, scratch: Path) -> ModelSource:
    # The report's readers: the export is a result of a finished study, like the report.
    from spheroid_hpo.results.artifacts import download_model
    from spheroid_hpo.results.family import open_family, require_best_trials
    from spheroid_hpo.tuning.records import RunRecord
    from spheroid_hpo.tuning.storage import open_artifact_store

    family = open_family(storage_url=storage_url, study=study, runs_dir=runs_dir)
    require_best_trials(family)
    architecture, trial = family.best_overall()
    artifact_dir = family.workspace(runs_dir=runs_dir, artifact_dir=artifact_dir).artifact_dir
    model_path = download_model(
        trial, artifact_store=open_artifact_store(artifact_dir), artifact_dir=artifact_dir,
        study_name=family.config.study_name(architecture), folder=scratch,
    )
    _, info = load_model(model_path)
    folder = family.data_folder(data_dir=data_dir, runs_dir=runs_dir)
    dataset = family.load_data(folder, manifest_path=scratch / DEFAULT_MANIFEST_NAME)
    _require_test_images(dataset.test, folder)
    config = {
        "study": family.name, "architecture": architecture, "trial": trial.number,
        "val_macro_f1": trial.value, **family.params(trial, architecture),
        "precision": RunRecord.of(trial).precision or family.config.training.precision,
        "calibration": RunRecord.of(trial).calibration,
    }
    return ModelSource(model_path=model_path, info=info,
                       description=f"study {family.name}, best trial {trial.number} ({architecture})",
                       config=config, test=dataset.test, data_root=dataset.root)


def _require_test_images(test: SplitTensors, folder: Path) -> None:
    if len(test) == 0:
        raise InputError(f"the test split of {folder} holds no readable images; the export needs some to check on")
