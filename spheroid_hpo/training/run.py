"""Train one CNN on a folder of images, end to end, and write its run folder.

``run_training`` is what ``spheroid-hpo train``, ``export-best``, ``reproduce`` and
``report --repeats`` call: load the data once, train it with the one recipe
(``training.recipe.fit``: model, folds, loop, scores, calibration), and write ``metrics.json``,
``model.pt`` (with the temperature fitted on validation), ``curves.png``,
``confusion.png`` and ``reliability.png``.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from spheroid_hpo.atomic_write import replacing, require_writable, write_text_atomically
from spheroid_hpo.data import (
    DEFAULT_MANIFEST_NAME,
    DEFAULT_SPLIT,
    SplitSpec,
    check_fold_number,
    load_dataset,
    training_data,
)
from spheroid_hpo.defaults import IMAGE_SIZE
from spheroid_hpo.training.calibration import plot_reliability
from spheroid_hpo.training.device import PRECISION_NAMES, resolve_device
from spheroid_hpo.training.figures import plot_confusion, plot_curves
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.models import check_image_size
from spheroid_hpo.training.recipe import TrainSpec, fit
from spheroid_hpo.training.saved_model import MODEL_FILE, save_model
from spheroid_hpo.training.settings import TRAINING_DEFAULTS

METRICS_FILE = "metrics.json"  # beside model.pt in a run folder: TrainResult.as_dict()
# The run's own copy of the split it trained with, so export and audit-labels never re-split
# or write into the data folder (a relative manifest path in metrics.json did both from another cwd).
RUN_SPLIT_FILE = DEFAULT_MANIFEST_NAME


def run_split_manifest(run_dir: Path) -> Path | None:
    """The split manifest a run folder (``train``, ``reproduce --out``) trained with, or None.

    Its own copy, RUN_SPLIT_FILE, when present; for a run written before runs kept one, the
    manifest its metrics.json names (an absolute path, or relative to the run folder) when that
    file still exists. Reading it writes nothing; pass it as ``manifest_path`` to ``load_dataset``.
    """
    run_dir = Path(run_dir)
    own = run_dir / RUN_SPLIT_FILE
    if own.is_file():
        return own
    try:
        recorded = json.loads((run_dir / METRICS_FILE).read_text()).get("split_manifest")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(recorded, str) or not recorded:
        return None
    path = Path(recorded)
    for candidate in ((path,) if path.is_absolute() else (run_dir / path, path)):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class TrainResult:
    """What one training run measured; ``as_dict()`` is its ``metrics.json``."""

    class_names: tuple[str, ...]
    validation: dict  # loss, accuracy, macro_f1, f1 per class, confusion (after training)
    test: dict
    calibration: dict
    history: tuple[dict, ...]  # one EpochStats.as_dict() per epoch (the last fold's, with cv_folds)
    cv_fold_val_macro_f1: tuple[float, ...] | None  # with cv_folds: each fold's last-epoch validation macro-F1
    wall_time_seconds: float
    parameter_count: int
    split_sizes: dict[str, int]
    split_manifest: str
    data_fingerprint: str
    duplicate_groups_across_splits: tuple
    split_relaxed: str | None  # what a new split gave up to near-duplicates (SplitPlan.relaxed)
    skipped_images: tuple[dict, ...]
    config: dict
    environment: dict

    @property
    def val_macro_f1(self) -> float:
        """What a trial's value is: the last epoch's validation macro-F1, taken inside the loop, or
        with cv_folds its mean over the folds (``FitResult.value``)."""
        if self.cv_fold_val_macro_f1:
            return statistics.fmean(self.cv_fold_val_macro_f1)
        return self.history[-1]["val_macro_f1"]

    @property
    def test_macro_f1(self) -> float:
        """Macro-F1 of the trained model on the test split."""
        return self.test["macro_f1"]

    def as_dict(self) -> dict:
        """The ``metrics.json`` document."""
        return {
            "class_names": list(self.class_names), "validation": self.validation, "test": self.test,
            "calibration": self.calibration, "history": list(self.history),
            "cv_fold_val_macro_f1": list(self.cv_fold_val_macro_f1) if self.cv_fold_val_macro_f1 else None,
            "wall_time_seconds": self.wall_time_seconds, "parameter_count": self.parameter_count,
            "split_sizes": self.split_sizes, "split_manifest": self.split_manifest,
            "data_fingerprint": self.data_fingerprint,
            "duplicate_groups_across_splits": list(self.duplicate_groups_across_splits),
            "split_relaxed": self.split_relaxed,
            "skipped_images": list(self.skipped_images), "config": self.config, "environment": self.environment,
        }


def run_training(
    *,
    data_dir: Path,
    out_dir: Path,
    arch: str,
    hyperparams: Hyperparams,
    image_size: int = IMAGE_SIZE,
    seed: int = TRAINING_DEFAULTS.seed,
    device: str = "auto",
    weights: str = TRAINING_DEFAULTS.weights,
    precision: str = TRAINING_DEFAULTS.precision,
    split: SplitSpec = DEFAULT_SPLIT,
    cv_folds: int | None = None,
    class_names: Sequence[str] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``arch`` with ``hyperparams`` on ``data_dir`` (``training.recipe.fit``) and write the run folder.

    With ``cv_folds`` it trains as a cross-validated trial does, once per fold of train+val
    (folds drawn with ``split.seed``); the model, its scores and figures are then the last fold's,
    and ``val_macro_f1`` the mean over the folds.
    """
    started = time.perf_counter()
    config = {
        "data_dir": str(Path(data_dir).resolve()), "out_dir": str(Path(out_dir).resolve()), "arch": arch,
        **hyperparams.as_dict(), "image_size": image_size,
        "seed": seed, "device": device, "weights": weights, "precision": precision,
        "split": split.as_dict(), "cv_folds": cv_folds, "class_names": list(class_names) if class_names else None,
    }
    # Before the data is decoded: these fail in seconds, not after minutes of loading.
    spec = TrainSpec(architecture=arch, hyperparams=hyperparams, seed=seed, precision=precision, weights=weights)
    check_image_size(arch, image_size)
    if cv_folds is not None:
        check_fold_number(cv_folds)
    require_writable(Path(out_dir), option="--out")
    torch_device = resolve_device(device)
    dataset = load_dataset(
        data_dir, image_size=image_size, split=split, class_names=class_names, progress=progress,
    ).to(torch_device)
    data = training_data(dataset, manifest=dataset.manifest_path, cv_folds=cv_folds, split_seed=split.seed)
    fitted = fit(spec, data, device=torch_device, test=dataset.test, progress=progress)
    config["precision"] = PRECISION_NAMES[fitted.autocast_dtype]  # what it trained in, not "auto"

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(out_dir / MODEL_FILE, fitted.model, fitted.info)
    if dataset.manifest_path.resolve() != (out_dir / RUN_SPLIT_FILE).resolve():
        with replacing(out_dir / RUN_SPLIT_FILE) as partial:
            shutil.copyfile(dataset.manifest_path, partial)
    plot_reliability(fitted.calibration, out_dir / "reliability.png", title=f"{arch}: reliability before and after "
                     f"temperature scaling")
    history_dicts = [record.as_dict() for record in fitted.history]
    plot_curves(history_dicts, out_dir / "curves.png", title=f"{arch}: loss and accuracy per epoch")
    plot_confusion(
        fitted.test.metrics.confusion, dataset.class_names, out_dir / "confusion.png",
        title=f"{arch}: test confusion matrix",
    )
    autocast_dtype = fitted.autocast_dtype
    result = TrainResult(
        class_names=tuple(dataset.class_names),
        validation=fitted.validation.as_dict(),
        test=fitted.test.as_dict(),
        calibration=fitted.calibration.as_dict(),
        history=tuple(history_dicts),
        cv_fold_val_macro_f1=fitted.fold_scores if fitted.cross_validated else None,
        wall_time_seconds=time.perf_counter() - started,
        parameter_count=fitted.parameter_count,
        split_sizes={name: len(getattr(dataset, name).labels) for name in ("train", "val", "test")},
        split_manifest=str(dataset.manifest_path.resolve()),
        data_fingerprint=dataset.fingerprint,
        duplicate_groups_across_splits=tuple(dataset.straddling),
        split_relaxed=dataset.relaxed,
        skipped_images=tuple({"path": path, "reason": reason} for path, reason in dataset.problems),
        config=config,
        environment={
            "device": str(torch_device),
            "autocast": str(autocast_dtype).removeprefix("torch.") if autocast_dtype else "fp32",
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    )
    write_text_atomically(out_dir / METRICS_FILE, json.dumps(result.as_dict(), indent=2))
    return result
