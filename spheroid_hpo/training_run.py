"""Train one CNN on a folder of images, end to end, and write its run folder.

``run_training`` is what ``spheroid-hpo train`` calls: load the data once, build
the model, train, evaluate validation and test, and write ``metrics.json``,
``model.pt`` (with the temperature fitted on validation), ``curves.png``,
``confusion.png`` and ``reliability.png``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from spheroid_hpo import engine
from spheroid_hpo.calibration import calibrate, plot_reliability
from spheroid_hpo.data import load_dataset
from spheroid_hpo.figures import plot_confusion, plot_curves
from spheroid_hpo.models import check_image_size, count_parameters, create_model
from spheroid_hpo.saved_model import ModelInfo, save_model


def run_training(
    *,
    data_dir: Path,
    out_dir: Path,
    arch: str,
    epochs: int,
    lr: float,
    rotation: float,
    batch_size: int,
    image_size: int = 224,
    seed: int = 0,
    device: str = "auto",
    weights: str = "none",
    precision: str = "auto",
    bn_momentum: float | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    group_by: str | None = None,
    groups_csv: Path | None = None,
    split_manifest: Path | None = None,
    class_names: Sequence[str] | None = None,
    allow_near_duplicates_across_splits: bool = False,
    class_weights: str = "none",
    progress: bool = True,
) -> dict:
    """Train ``arch`` on ``data_dir`` and write the run folder ``out_dir``; return the metrics."""
    started = time.perf_counter()
    config = {
        "data_dir": str(Path(data_dir).resolve()), "out_dir": str(Path(out_dir).resolve()), "arch": arch,
        "epochs": epochs, "lr": lr, "rotation": rotation, "batch_size": batch_size, "image_size": image_size,
        "seed": seed, "device": device, "weights": weights, "precision": precision, "bn_momentum": bn_momentum,
        "fractions": list(fractions), "group_by": group_by,
        "groups_csv": str(groups_csv) if groups_csv else None,
        "split_manifest": str(split_manifest) if split_manifest else None,
        "class_names": list(class_names) if class_names else None,
        "allow_near_duplicates_across_splits": allow_near_duplicates_across_splits,
        "class_weights": class_weights,
    }
    # Before the data is decoded: these fail in seconds, not after minutes of loading.
    engine.check_batch_size(batch_size)
    check_image_size(arch, image_size)
    torch_device = engine.resolve_device(device)
    dataset = load_dataset(
        data_dir, image_size=image_size, seed=seed, fractions=fractions, group_by=group_by,
        groups_csv=groups_csv, manifest_path=split_manifest, class_names=class_names, progress=progress,
        near_duplicates_together=not allow_near_duplicates_across_splits,
    ).to(torch_device)
    num_classes = len(dataset.class_names)

    engine.seed_everything(seed)
    model = create_model(arch, num_classes=num_classes, weights=weights, bn_momentum=bn_momentum)
    model.to(torch_device, memory_format=torch.channels_last)
    history = engine.train(
        model,
        train_images=dataset.train.images, train_labels=dataset.train.labels,
        val_images=dataset.val.images, val_labels=dataset.val.labels,
        num_classes=num_classes, epochs=epochs, lr=lr, batch_size=batch_size, rotation=rotation,
        seed=seed, precision=precision, progress=progress, class_weights=class_weights,
    )
    autocast_dtype = engine.resolve_precision(precision, torch_device, model=model)
    evaluations = {}
    for split in ("val", "test"):
        tensors = getattr(dataset, split)
        loss, metrics = engine.evaluate(
            model, tensors.images, tensors.labels, num_classes=num_classes, autocast_dtype=autocast_dtype
        )
        evaluations[split] = {"loss": loss, **metrics.to_dict()}
    # One temperature fitted on validation; test is only scored with it.
    calibration = calibrate(
        model, val_images=dataset.val.images, val_labels=dataset.val.labels,
        test_images=dataset.test.images, test_labels=dataset.test.labels,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = ModelInfo(
        architecture=arch, class_names=dataset.class_names, image_size=image_size,
        mean=engine.IMAGENET_MEAN, std=engine.IMAGENET_STD, bn_momentum=bn_momentum,
        temperature=calibration.temperature, uncertain_entropy=calibration.uncertain_entropy,
    )
    save_model(out_dir / "model.pt", model, info)
    plot_reliability(calibration, out_dir / "reliability.png", title=f"{arch}: reliability before and after "
                     f"temperature scaling")
    history_dicts = [record.as_dict() for record in history]
    plot_curves(history_dicts, out_dir / "curves.png", title=f"{arch}: loss and accuracy per epoch")
    plot_confusion(
        evaluations["test"]["confusion"], dataset.class_names, out_dir / "confusion.png",
        title=f"{arch}: test confusion matrix",
    )
    results = {
        "class_names": list(dataset.class_names),
        "validation": evaluations["val"],
        "test": evaluations["test"],
        "calibration": calibration.as_dict(),
        "history": history_dicts,
        "wall_time_seconds": time.perf_counter() - started,
        "parameter_count": count_parameters(model),
        "split_sizes": {split: len(getattr(dataset, split).labels) for split in ("train", "val", "test")},
        "split_manifest": str(dataset.manifest_path),
        "data_fingerprint": dataset.fingerprint,
        "duplicate_groups_across_splits": list(dataset.straddling),
        "skipped_images": [{"path": path, "reason": reason} for path, reason in dataset.problems],
        "config": config,
        "environment": {
            "device": str(torch_device),
            "autocast": str(autocast_dtype).removeprefix("torch.") if autocast_dtype else "fp32",
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    (out_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    return results
