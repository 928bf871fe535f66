"""load_dataset: split, manifest reuse and validation, unreadable images, devices."""

from __future__ import annotations

import csv
import re
import warnings
from collections import defaultdict

import numpy as np
import pytest
import torch
from PIL import Image

from spheroid_hpo.data import SPLIT_NAMES, SplitSpec, load_dataset, manifest_fingerprint, read_manifest
from spheroid_hpo.errors import InputError

# Each class has its own grey level, so a decoded image shows which class it was read as.
GREY = {"a_round": 40, "b_dead": 140, "c_packed": 240}
PER_CLASS = 12


@pytest.fixture
def data_dir(tmp_path):
    """ROOT/<class>/sph<k>_<i>.png: 12 grey 32 px PNGs per class, 4 spheroids k of 3 images.

    One pixel holds the image's index, so no two images are exact duplicates (which would be
    kept in one split)."""
    root = tmp_path / "data"
    for name, grey in GREY.items():
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = np.full((32, 32), grey, np.uint8)
            pixels[0, 0] = grey + i
            Image.fromarray(pixels).save(root / name / f"sph{i % 4}_{i}.png")
    return root


def load(data_dir, *, splits=SPLIT_NAMES, manifest_path=None, **split):
    return load_dataset(data_dir, image_size=16, split=SplitSpec(**split), manifest_path=manifest_path, splits=splits)


def manifest_lines(path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_load_makes_stratified_splits_and_writes_the_manifest(data_dir):
    dataset = load(data_dir)

    assert dataset.class_names == tuple(GREY)
    assert dataset.manifest_path == data_dir / "splits.csv"
    assert dataset.fingerprint == manifest_fingerprint(read_manifest(dataset.manifest_path), root=data_dir)
    assert dataset.problems == ()
    sizes = {name: len(getattr(dataset, name)) for name in SPLIT_NAMES}
    assert sizes == {"train": 3 * 8, "val": 3 * 2, "test": 3 * 2}
    for name in SPLIT_NAMES:
        split = getattr(dataset, name)
        assert split.images.shape == (len(split), 3, 16, 16) and split.images.dtype == torch.float16
        assert split.labels.dtype == torch.int64
        for image, label, path in zip(split.images, split.labels, split.paths):
            class_name = dataset.class_names[label]
            assert path.startswith(class_name + "/")
            assert abs(image.float().mean().item() - GREY[class_name] / 255) < 1e-3


def test_existing_manifest_is_reused_whatever_the_seed(data_dir):
    first = load(data_dir, seed=0)
    second = load(data_dir, seed=123, fractions=(0.5, 0.25, 0.25))
    assert second.fingerprint == first.fingerprint
    for name in SPLIT_NAMES:
        assert getattr(second, name).paths == getattr(first, name).paths


def test_manifest_listing_a_deleted_file_says_to_delete_the_manifest(data_dir):
    load(data_dir)
    (data_dir / "b_dead" / "sph1_5.png").unlink()
    with pytest.raises(InputError, match=r"b_dead/sph1_5\.png.*no longer exists.*delete"):
        load(data_dir)


def test_manifest_with_a_changed_class_is_an_input_error(data_dir):
    manifest = load(data_dir).manifest_path
    lines = manifest_lines(manifest)
    lines[0]["class"] = "b_dead"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "class", "split"])
        writer.writeheader()
        writer.writerows(lines)
    with pytest.raises(InputError, match=rf"{lines[0]['path']} as class 'b_dead'.*--split-manifest"):
        load(data_dir)


def test_new_file_not_in_the_manifest_is_left_out_with_a_warning(data_dir, capsys):
    load(data_dir)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(data_dir / "a_round" / "late.png")
    dataset = load(data_dir)
    assert re.search(r"^warning: 1 image\(s\).*not in the split manifest.*a_round/late\.png", capsys.readouterr().err,
                     re.MULTILINE)
    assert all("a_round/late.png" not in getattr(dataset, s).paths for s in SPLIT_NAMES)


def test_unreadable_image_is_warned_about_skipped_and_kept_in_the_manifest(data_dir, capsys, monkeypatch):
    broken = data_dir / "c_packed" / "sph3_7.png"
    broken.write_bytes(broken.read_bytes()[:60])
    # Many lab environments set this; the line must be printed all the same.
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = load(data_dir)

    messages = [line for line in capsys.readouterr().err.splitlines() if "skipping" in line]
    assert len(messages) == 1 and messages[0].startswith(f"warning: skipping {broken}: ")
    assert [path for path, _ in dataset.problems] == ["c_packed/sph3_7.png"]
    assert sum(len(getattr(dataset, s)) for s in SPLIT_NAMES) == 3 * PER_CLASS - 1
    assert "c_packed/sph3_7.png" in {row["path"] for row in manifest_lines(dataset.manifest_path)}


def test_only_the_requested_splits_are_decoded(data_dir):
    manifest = load(data_dir).manifest_path
    in_train = next(row["path"] for row in manifest_lines(manifest) if row["split"] == "train")
    (data_dir / in_train).write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the broken train image must not even be read
        dataset = load(data_dir, splits=("test",))
    assert len(dataset.test) == 6 and len(dataset.train) == 0 and len(dataset.val) == 0
    assert dataset.train.images.shape == (0, 3, 16, 16)


def test_group_pattern_keeps_each_spheroid_in_one_split(data_dir):
    dataset = load(data_dir, group_by=r"(sph\d+)_")

    rows = manifest_lines(dataset.manifest_path)
    assert set(rows[0]) == {"path", "class", "split", "group"}
    splits_of_group = defaultdict(set)
    for row in rows:
        splits_of_group[row["group"]].add(row["split"])
    assert len(splits_of_group) == 4 and all(len(s) == 1 for s in splits_of_group.values())
    assert all(len(getattr(dataset, s)) >= 3 for s in SPLIT_NAMES)


def test_group_pattern_and_groups_file_together_are_an_input_error(data_dir, tmp_path):
    with pytest.raises(InputError, match=r"only one of group_by \(--group-by\) and groups_csv \(--groups-csv\)"):
        load(data_dir, group_by=r"(sph\d+)_", groups_csv=tmp_path / "groups.csv")


def test_unwritable_manifest_location_says_to_pass_another_path(data_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot write the split manifest.*--split-manifest"):
        load(data_dir, manifest_path=blocker / "splits.csv")


def test_to_returns_a_new_dataset_with_channels_last_images(data_dir):
    dataset = load(data_dir)
    moved = dataset.to("cpu")
    assert moved is not dataset and moved.fingerprint == dataset.fingerprint
    assert moved.train.images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(moved.train.images, dataset.train.images)
    assert moved.test.paths == dataset.test.paths
