"""Stratified and group-aware splits, group sources, and the split manifest."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from spheroid_hpo.data import (
    SPLIT_NAMES,
    LabeledFile,
    ManifestRow,
    assign_splits,
    groups_from_csv,
    groups_from_regex,
    manifest_fingerprint,
    read_manifest,
    write_manifest,
)
from spheroid_hpo.errors import InputError

CLASSES = ("alive", "dead", "empty")


def make_files(counts: dict[str, int]) -> list[LabeledFile]:
    """``count`` files per class, named <class>/sph<k>_<i>.png with 5 images per spheroid k."""
    return [
        LabeledFile(path=f"{name}/sph{i // 5}_{i:03d}.png", label=CLASSES.index(name))
        for name, count in counts.items()
        for i in range(count)
    ]


def split_counts(files, splits) -> dict[tuple[str, str], int]:
    return Counter((CLASSES[f.label], s) for f, s in zip(files, splits))


# --------------------------------------------------------------------------- stratified


def test_default_fractions_are_applied_per_class():
    files = make_files({"alive": 100, "dead": 40})
    counts = split_counts(files, assign_splits(files, seed=0))
    assert [counts["alive", s] for s in SPLIT_NAMES] == [70, 15, 15]
    assert [counts["dead", s] for s in SPLIT_NAMES] == [28, 6, 6]


def test_tiny_class_gets_one_image_in_every_split():
    files = make_files({"alive": 50, "dead": 3})
    counts = split_counts(files, assign_splits(files, seed=1))
    assert [counts["dead", s] for s in SPLIT_NAMES] == [1, 1, 1]


def test_split_is_deterministic_per_seed_and_independent_of_file_order():
    files = make_files({"alive": 30, "dead": 20, "empty": 10})
    first = dict(zip(files, assign_splits(files, seed=7)))
    shuffled = random.Random(0).sample(files, len(files))
    again = dict(zip(shuffled, assign_splits(shuffled, seed=7)))
    other_seed = dict(zip(files, assign_splits(files, seed=8)))
    assert again == first
    assert other_seed != first


def test_class_with_too_few_images_names_the_class_its_count_and_the_fix():
    files = make_files({"alive": 20, "dead": 2})
    with pytest.raises(InputError, match=r"'dead' has 2 image\(s\).*add images"):
        assign_splits(files, seed=0)


@pytest.mark.parametrize(
    "fractions, problem",
    [((0.5, 0.5), "have 2 values"), ((0.9, 0.2, -0.1), "positive"), ((0.6, 0.3, 0.3), "sum to 1.2")],
)
def test_bad_fractions_are_rejected(fractions, problem):
    with pytest.raises(InputError, match=problem):
        assign_splits(make_files({"alive": 10, "dead": 10}), fractions=fractions, seed=0)


# --------------------------------------------------------------------------- group-aware


def random_grouped_files(seed: int) -> tuple[list[LabeledFile], list[str]]:
    """40 spheroids of 1..12 patches each; each patch's class drawn with uneven weights."""
    rng = random.Random(seed)
    files, groups = [], []
    for k in range(40):
        for i in range(rng.randint(1, 12)):
            label = rng.choices(range(3), weights=(5, 2, 3))[0]
            files.append(LabeledFile(path=f"{CLASSES[label]}/sph{k}_{i}.png", label=label))
            groups.append(f"sph{k}")
    return files, groups


@pytest.mark.parametrize("seed", range(8))
def test_no_group_spans_two_splits_and_classes_stay_roughly_stratified(seed):
    files, groups = random_grouped_files(seed)
    splits = assign_splits(files, seed=seed, groups=groups)

    splits_of_group = defaultdict(set)
    for group, split in zip(groups, splits):
        splits_of_group[group].add(split)
    assert all(len(s) == 1 for s in splits_of_group.values())

    counts = split_counts(files, splits)
    for name in CLASSES:
        per_split = [counts[name, s] for s in SPLIT_NAMES]
        assert min(per_split) >= 1, (name, per_split)
        assert 0.55 <= per_split[0] / sum(per_split) <= 0.85, (name, per_split)


def test_group_split_is_deterministic_per_seed():
    files, groups = random_grouped_files(0)
    first = assign_splits(files, seed=3, groups=groups)
    assert assign_splits(files, seed=3, groups=groups) == first
    assert any(assign_splits(files, seed=s, groups=groups) != first for s in (4, 5, 6))


def test_class_in_too_few_groups_is_an_input_error():
    files = make_files({"alive": 30, "dead": 10})  # dead: 2 spheroids of 5 images
    groups = [f.path.split("/")[1].split("_")[0] for f in files]
    with pytest.raises(InputError, match=r"'dead' has 10 image\(s\) in only 2 group\(s\)"):
        assign_splits(files, seed=0, groups=groups)


# --------------------------------------------------------------------------- group sources


def test_groups_from_regex_uses_the_first_capture_group_of_the_file_name():
    files = [LabeledFile("alive/plate_sph1/sph12_003.png", 0), LabeledFile("dead/sph7_x.tif", 1)]
    assert groups_from_regex(files, r"(sph\d+)_") == ["sph12", "sph7"]


@pytest.mark.parametrize(
    "pattern, problem",
    [(r"(sph\d+", "not a valid regular expression"), (r"sph\d+_", "no capture group")],
)
def test_groups_from_regex_rejects_bad_patterns(pattern, problem):
    with pytest.raises(InputError, match=problem):
        groups_from_regex(make_files({"alive": 3}), pattern)


def test_groups_from_regex_names_a_file_it_does_not_match():
    files = [LabeledFile("alive/sph1_a.png", 0), LabeledFile("alive/other.png", 0)]
    with pytest.raises(InputError, match="'other.png'"):
        groups_from_regex(files, r"(sph\d+)_")


def test_groups_from_csv_reads_path_group_rows(tmp_path):
    files = [LabeledFile("alive/a.png", 0), LabeledFile("dead/b.png", 1)]
    table = tmp_path / "groups.csv"
    table.write_text("path,group\ndead/b.png,s2\nalive/a.png,s1\nunused/c.png,s3\n")
    assert groups_from_csv(files, table) == ["s1", "s2"]

    table.write_text("path,group\nalive/a.png,s1\n")
    with pytest.raises(InputError, match="no row for dead/b.png"):
        groups_from_csv(files, table)


# --------------------------------------------------------------------------- manifest


def test_manifest_round_trip_with_groups(tmp_path):
    files = make_files({"alive": 4, "dead": 3})
    splits = ["train", "val", "test", "train", "train", "val", "test"]
    groups = [f"g{i % 2}" for i in range(len(files))]
    path = tmp_path / "sub" / "splits.csv"
    written = write_manifest(path, files, CLASSES, splits, groups)

    assert path.read_text().splitlines()[0] == "path,class,split,group"
    assert read_manifest(path) == written
    assert ManifestRow("dead/sph0_001.png", "dead", "val", "g1") in written


def test_manifest_without_groups_has_three_columns(tmp_path):
    files = make_files({"alive": 3})
    path = tmp_path / "splits.csv"
    write_manifest(path, files, CLASSES, ["train", "val", "test"])
    assert path.read_text().splitlines()[:2] == ["path,class,split", "alive/sph0_000.png,alive,train"]
    assert all(row.group is None for row in read_manifest(path))


@pytest.mark.parametrize(
    "text, problem",
    [
        ("path,split\na.png,train\n", r"lacks \['class'\]"),
        ("path,class,split\nalive/a.png,alive,training\n", "split 'training'"),
        ("path,class,split\nalive/a.png,alive,train\nalive/a.png,alive,val\n", "twice"),
    ],
)
def test_malformed_manifest_is_an_input_error_that_says_to_delete_it(tmp_path, text, problem):
    path = tmp_path / "splits.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as error:
        read_manifest(path)
    assert "delete" in str(error.value)


def test_fingerprint_ignores_row_order_and_groups_but_not_splits():
    rows = [ManifestRow(f"alive/{i}.png", "alive", SPLIT_NAMES[i % 3], f"g{i}") for i in range(9)]
    reordered = [ManifestRow(r.path, r.class_name, r.split) for r in reversed(rows)]
    moved = [*rows[:-1], ManifestRow(rows[-1].path, "alive", "train")]
    assert manifest_fingerprint(reordered) == manifest_fingerprint(rows)
    assert manifest_fingerprint(moved) != manifest_fingerprint(rows)
    assert len(manifest_fingerprint(rows)) == 64


def test_few_equal_groups_still_give_every_split_every_class():
    # Four spheroids that each hold every class: greedy balancing alone would leave 'test'
    # empty, so a group has to be moved there.
    files = [LabeledFile(f"{name}/sph{k}_{i}.png", label) for label, name in enumerate(CLASSES)
             for k in range(4) for i in range(3)]
    groups = [f.path.split("/")[1].split("_")[0] for f in files]
    counts = split_counts(files, assign_splits(files, seed=0, groups=groups))
    assert all(counts[name, split] >= 1 for name in CLASSES for split in SPLIT_NAMES)
