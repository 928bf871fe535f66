"""`spheroid-hpo train` options reach the run, and each split's scores are that split's.

Split identity is pinned by the manifest: the tests write one whose validation and
test splits differ in size and class mix, and recompute the scores from model.pt
with scikit-learn, so scoring the wrong split cannot pass.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score
from split_manifests import GROUP_BY, read_manifest, write_uneven_manifest
from typer.testing import CliRunner

from spheroid_hpo.cli import app
from spheroid_hpo.data import load_dataset
from spheroid_hpo.training import inference
from spheroid_hpo.training.device import resolve_precision
from spheroid_hpo.training.models import create_model
from spheroid_hpo.training.saved_model import load_model

REVERSED_CLASSES = ("3_live_inside", "2_live_outside", "1_dead_cells", "0_background")


def invoke(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"


def recomputed_scores(run_dir: Path, data_dir: Path, manifest: Path, split: str, class_names, precision: str):
    """Confusion matrix and per-class F1 of the run's model.pt on ``split`` of ``manifest``, by scikit-learn."""
    model, info = load_model(run_dir)
    assert info.class_names == tuple(class_names)
    dataset = load_dataset(data_dir, image_size=info.image_size, manifest_path=manifest, class_names=class_names,
                           splits=(split,))
    tensors = getattr(dataset, split)
    autocast = resolve_precision(precision, torch.device("cpu"), model=model)
    logits = inference.predict_logits(model, tensors.images, mean=info.mean, std=info.std, autocast_dtype=autocast)
    predicted, labels = logits.argmax(1).numpy(), tensors.labels.numpy()
    classes = list(range(len(class_names)))
    return (confusion_matrix(labels, predicted, labels=classes),
            f1_score(labels, predicted, labels=classes, average=None, zero_division=0))


def test_train_scores_each_split_from_the_manifest_and_records_every_option(demo_dir, tmp_path):
    manifest = tmp_path / "uneven-splits.csv"
    sizes = write_uneven_manifest(demo_dir, manifest)
    # A state dict to start from: the run must load it (a tiny learning rate keeps it visible).
    torch.manual_seed(123)
    start = create_model("squeezenet1_1", num_classes=4).state_dict()
    weights = tmp_path / "start.pt"
    torch.save(start, weights)
    out = tmp_path / "run"

    invoke("train", "--data", str(demo_dir), "--out", str(out), "--arch", "squeezenet1_1", "--epochs", "1",
           "--lr", "1e-9", "--rotation", "7.5", "--batch-size", "6", "--image-size", "32", "--seed", "3",
           "--device", "cpu", "--precision", "fp32", "--weights", str(weights), "--bn-momentum", "0.05",
           "--split-manifest", str(manifest), "--classes", ",".join(REVERSED_CLASSES),
           "--class-weights", "balanced", "--near-duplicates", "apart", "--split-seed", "5",
           "--fractions", "0.6,0.2,0.2", "--weight-decay", "1e-4", "--lr-schedule", "cosine")

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"] == {
        "data_dir": str(demo_dir.resolve()), "out_dir": str(out.resolve()), "arch": "squeezenet1_1", "epochs": 1,
        "lr": 1e-9, "rotation": 7.5, "batch_size": 6, "image_size": 32, "seed": 3, "device": "cpu",
        "weights": str(weights), "precision": "fp32", "bn_momentum": 0.05,
        "split": {"split_seed": 5, "fractions": [0.6, 0.2, 0.2], "group_by": None, "groups_csv": None,
                  "split_manifest": str(manifest), "near_duplicates": "apart"},
        "class_names": list(REVERSED_CLASSES), "class_weights": "balanced", "cv_folds": None,
        "weight_decay": 1e-4, "lr_schedule": "cosine",
    }
    assert metrics["class_names"] == list(REVERSED_CLASSES)
    assert metrics["split_manifest"] == str(manifest)
    assert metrics["split_sizes"] == sizes

    for section, split in (("validation", "val"), ("test", "test")):
        recorded = np.array(metrics[section]["confusion"])
        assert recorded.sum() == sizes[split], section  # every image of that split, and only those
        confusion, per_class_f1 = recomputed_scores(out, demo_dir, manifest, split, REVERSED_CLASSES, "fp32")
        np.testing.assert_array_equal(recorded, confusion, err_msg=section)
        np.testing.assert_allclose(metrics[section]["f1"], per_class_f1, atol=1e-9, err_msg=section)
        # Rows are true classes in the order given: the manifest's class counts, reversed.
        counts = Counter(row["class"] for row in read_manifest(manifest) if row["split"] == split)
        assert recorded.sum(axis=1).tolist() == [counts[name] for name in REVERSED_CLASSES]

    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["bn_momentum"] == 0.05 and payload["class_names"] == list(REVERSED_CLASSES)
    trained = payload["state_dict"]
    torch.testing.assert_close(trained["features.0.weight"], start["features.0.weight"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("grouping", ["group_by", "groups_csv"])
def test_train_keeps_each_group_in_one_split(grouping, demo_dir, tmp_path):
    manifest = tmp_path / "splits.csv"
    names = sorted(str(p.relative_to(demo_dir)) for p in demo_dir.rglob("*.png"))
    expected_group = {name: re.search(GROUP_BY, name).group(1) for name in names}
    if grouping == "group_by":
        option = ["--group-by", GROUP_BY]
    else:
        groups_csv = tmp_path / "groups.csv"
        # Other labels than the regex's, so the groups provably come from this file.
        expected_group = {name: f"spheroid-{group}" for name, group in expected_group.items()}
        groups_csv.write_text("path,group\n" + "".join(f"{n},{g}\n" for n, g in expected_group.items()))
        option = ["--groups-csv", str(groups_csv)]
    out = tmp_path / "run"
    invoke("train", "--data", str(demo_dir), "--out", str(out), "--arch", "squeezenet1_1", "--epochs", "1",
           "--batch-size", "8", "--image-size", "32", "--device", "cpu", "--split-manifest", str(manifest), *option)

    rows = read_manifest(manifest)
    assert {row["path"]: row["group"] for row in rows} == expected_group
    split_of_group: dict[str, set[str]] = {}
    for row in rows:
        split_of_group.setdefault(row["group"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in split_of_group.values()), split_of_group
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["split"]["group_by"] == (GROUP_BY if grouping == "group_by" else None)
    assert config["split"]["groups_csv"] == (option[1] if grouping == "groups_csv" else None)
