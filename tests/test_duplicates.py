"""Exact and near-duplicate images: found by check-data, kept in one split, reported when a
manifest splits them; and the class imbalance check."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from image_sets import COPY_KINDS, plant_copies
from PIL import Image, ImageEnhance
from real_data import ifc_cellcycle_fixture  # noqa: F401

from spheroid_hpo.data import (
    LabeledFile,
    SplitSpec,
    _duplicates,
    assign_splits,
    check_data,
    find_duplicates,
    load_dataset,
    prepare_split,
)
from spheroid_hpo.data._duplicates import duplicates_of, straddling
from spheroid_hpo.data._likeness import signature
from spheroid_hpo.data.demo import render_image, write_demo_data

SIZE = 64


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _jpeg_brighter(pixels: np.ndarray, path: Path, *, quality: int = 90, factor: float = 1.03) -> None:
    image = ImageEnhance.Brightness(Image.fromarray(pixels)).enhance(factor)
    image.save(path, format="JPEG", quality=quality)


def _noise(rng: np.random.Generator, level: float, spread: float) -> np.ndarray:
    return np.clip(np.rint((level + rng.normal(0, spread, (SIZE, SIZE))) * 255), 0, 255).astype(np.uint8)


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """Three classes of distinct demo images, with planted copies and look-alikes:

    - exact: alive/s00.png == alive/exact.bmp (same pixels, other format)
    - near: dead/s01.png ~ dead/near.jpg (JPEG q90, 3% brighter) ~ dead/small.png (resized to 48 px)
    - look-alikes, not duplicates: two featureless background patches, two noise textures
    """
    root = tmp_path / "data"
    names = ("alive", "dead", "empty")
    images = {}
    for label, name in enumerate(names):
        for i in range(8):
            pixels = render_image(label, size=SIZE, rng=np.random.default_rng([5, label, i]))
            images[name, i] = pixels
            _png(root / name / f"s{i:02d}.png", pixels)
    Image.fromarray(images["alive", 0]).save(root / "alive" / "exact.bmp")
    _jpeg_brighter(images["dead", 1], root / "dead" / "near.jpg")
    Image.fromarray(images["dead", 1]).resize((48, 48), Image.Resampling.BILINEAR).save(root / "dead" / "small.png")
    rng = np.random.default_rng(0)
    _png(root / "empty" / "background1.png", _noise(rng, 0.55, 0.01))
    _png(root / "empty" / "background2.png", _noise(rng, 0.55, 0.01))
    _png(root / "empty" / "texture1.png", _noise(rng, 0.5, 0.1))
    _png(root / "empty" / "texture2.png", _noise(rng, 0.5, 0.1))
    return root


EXACT = ("alive/exact.bmp", "alive/s00.png")
NEAR = ("dead/near.jpg", "dead/s01.png", "dead/small.png")


def test_check_data_lists_exact_and_near_duplicate_groups_but_not_look_alikes(planted):
    report = check_data(planted)
    assert report.duplicates.exact == (EXACT,)
    assert report.duplicates.near == (NEAR,)
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["exact_duplicates"] == [list(EXACT)]
    assert as_json["near_duplicates"] == [list(NEAR)]
    table = report.format_table()
    assert "1 exact duplicate group(s)" in table and "alive/exact.bmp, alive/s00.png" in table
    assert "1 near-duplicate group(s)" in table and "dead/near.jpg" in table


def test_jpeg_q90_copy_three_percent_brighter_is_caught_for_many_images(tmp_path):
    for label in range(4):
        for i in range(6):
            pixels = render_image(label, size=SIZE, rng=np.random.default_rng([11, label, i]))
            _png(tmp_path / f"o{label}{i}.png", pixels)
            _jpeg_brighter(pixels, tmp_path / f"o{label}{i}.jpg")
    paths = sorted(p.name for p in tmp_path.iterdir())
    found = find_duplicates(tmp_path, paths)
    assert found.exact == ()
    assert sorted(found.near) == sorted(
        (f"o{label}{i}.jpg", f"o{label}{i}.png") for label in range(4) for i in range(6)
    )


def test_generated_demo_data_has_no_duplicates(tmp_path):
    write_demo_data(tmp_path / "demo", per_class=40, size=SIZE, seed=0)
    report = check_data(tmp_path / "demo")
    assert report.duplicates.exact == () and report.duplicates.near == ()
    assert "no exact duplicate images" in report.format_table()


def test_look_alike_patches_are_not_near_duplicates(tmp_path):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    vignette = -0.03 * ((yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2) / (SIZE / 2) ** 2
    kinds = {
        "flat": lambda: 0.55 + rng.normal(0, 0.01, (SIZE, SIZE)),
        "lit": lambda: 0.55 + vignette + rng.normal(0, 0.01, (SIZE, SIZE)),  # same illumination
        "noise": lambda: 0.5 + rng.normal(0, 0.1, (SIZE, SIZE)),
    }
    for kind, make in kinds.items():
        for i in range(15):
            _png(tmp_path / f"{kind}{i:02d}.png", np.clip(np.rint(make() * 255), 0, 255).astype(np.uint8))
    found = find_duplicates(tmp_path, sorted(p.name for p in tmp_path.iterdir()))
    assert found.exact == () and found.near == ()


def test_near_groups_are_cliques_never_chains(monkeypatch):
    # Five distinct pictures; the pair test links 0-1, 1-2 and 2-3 (a chain) and 3-4 and 2-4.
    # Connected components would make one group of all five; a clique group holds only images
    # that are each other's copies.
    pictures = {f"{i}.png": signature(np.full((8, 8, 3), i / 10, dtype=np.float32)) for i in range(5)}
    pairs = [(0, 1, 0.95), (1, 2, 0.9), (2, 3, 0.9), (3, 4, 0.99), (2, 4, 0.98)]
    monkeypatch.setattr(_duplicates, "copy_pairs", lambda signatures: pairs)
    found = duplicates_of(pictures)
    linked = {frozenset((f"{i}.png", f"{j}.png")) for i, j, _ in pairs}
    assert found.near == (("0.png", "1.png"), ("2.png", "3.png", "4.png"))
    for group in found.near:
        assert all(frozenset((a, b)) in linked for a in group for b in group if a < b)


def test_a_folder_of_a_few_images_still_groups_faithful_copies(tmp_path):
    # Four images are too few to know what a look-alike is: a likeness of 0.97 or more counts.
    original = render_image(2, size=SIZE, rng=np.random.default_rng(7))
    _png(tmp_path / "a.png", original)
    _png(tmp_path / "brighter.png", np.clip(np.rint(original * 1.05), 0, 255).astype(np.uint8))
    _png(tmp_path / "other.png", render_image(2, size=SIZE, rng=np.random.default_rng(8)))
    Image.fromarray(original).save(tmp_path / "resaved.jpg", quality=75)
    found = find_duplicates(tmp_path, ["a.png", "brighter.png", "other.png", "resaved.jpg"])
    assert found.near == (("a.png", "brighter.png", "resaved.jpg"),)


def test_real_cell_crops_are_not_grouped_for_looking_alike(ifc_cellcycle):
    # 3,419 brightfield crops of one cell line: centred round cells with a dark rim, alike at
    # cell scale. Connected components of the former pair test put 1,896 (55%) in one group.
    report = check_data(ifc_cellcycle)
    grouped = {path for group in report.duplicates.near for path in group}
    assert len(grouped) <= 0.01 * report.total, report.duplicates.near
    assert report.label_conflicts == ()


def _found(root: Path, planted: list[tuple[str, str, str]]) -> dict[str, list[bool]]:
    """Per kind of copy, whether each planted copy shares a group with its original; and no
    group holds two originals."""
    groups = find_duplicates(root, sorted(p.relative_to(root).as_posix() for p in root.rglob("*.*"))).groups()
    group_of = {path: group for group in groups for path in group}
    originals = {original for _, original, _ in planted}
    for group in groups:
        assert len(originals & set(group)) <= 1, group
    found: dict[str, list[bool]] = {}
    for kind, original, copy in planted:
        found.setdefault(kind, []).append(original in group_of.get(copy, ()))
    return found


def test_copies_planted_among_real_crops_are_found(ifc_cellcycle, tmp_path):
    # The four smaller classes (719 crops), with two copies of each kind planted.
    source = tmp_path / "source"
    for name in ("Anaphase", "Metaphase", "Prophase", "Telophase"):
        shutil.copytree(ifc_cellcycle / name, source / name)
    planted = plant_copies(source, tmp_path / "planted", copies=2, seed=1)
    missed = {kind: hits for kind, hits in _found(tmp_path / "planted", planted).items() if not all(hits)}
    assert missed == {}


def test_copies_planted_among_demo_images_are_found(tmp_path):
    write_demo_data(tmp_path / "demo", per_class=20, size=64, seed=3)
    planted = plant_copies(tmp_path / "demo", tmp_path / "planted", copies=1, seed=2)
    missed = {kind: hits for kind, hits in _found(tmp_path / "planted", planted).items() if not all(hits)}
    assert missed == {}


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["ifc_cellcycle", "demo 64 px", "demo 256 px"])
def test_every_kind_of_planted_copy_is_found_95_percent_of_the_time(folder, ifc_cellcycle, tmp_path):
    # The README's recall table (benchmarks/duplicates.py prints it next to imagededup's).
    source = ifc_cellcycle
    if folder.startswith("demo"):
        source = tmp_path / "demo"
        write_demo_data(source, per_class=80, size=int(folder.split()[1]), seed=0)
    planted = plant_copies(source, tmp_path / "planted", copies=20, seed=0)
    recall = {kind: float(np.mean(hits)) for kind, hits in _found(tmp_path / "planted", planted).items()}
    assert set(recall) == set(COPY_KINDS)
    assert {kind: share for kind, share in recall.items() if share < 0.95} == {}


# --------------------------------------------------------------------------- splits


def _files(per_class: int) -> list[LabeledFile]:
    return [LabeledFile(f"c{label}/sph{i // 4}_{i:03d}.png", label) for label in range(3) for i in range(per_class)]


@pytest.mark.parametrize("grouped", [False, True], ids=["stratified", "group-aware"])
def test_no_duplicate_group_ever_straddles_two_splits(grouped):
    files = _files(30)
    paths = [f.path for f in files]
    rng = np.random.default_rng(0)
    # Duplicate sets within a class and one across classes (a copy filed under two labels).
    together = [tuple(rng.choice(paths[c * 30 : c * 30 + 30], size=3, replace=False))
                for c in range(3) for _ in range(3)]
    together.append((paths[1], paths[31]))
    groups = [p.split("_")[0] for p in paths] if grouped else None
    for seed in range(150):
        split_of = dict(zip(paths, assign_splits(files, seed=seed, groups=groups, together=together)))
        assert straddling(together, split_of) == [], seed
        for label in range(3):  # still every class in every split
            assert {split_of[f.path] for f in files if f.label == label} == {"train", "val", "test"}
        if grouped:
            assert all(len({split_of[p] for p in paths if p.startswith(g)}) == 1 for g in set(groups))


def test_without_duplicates_the_split_is_unchanged():
    files = _files(20)
    assert assign_splits(files, seed=4, together=()) == assign_splits(files, seed=4)


def test_new_split_keeps_planted_duplicates_together(planted):
    for seed in range(5):
        plan = prepare_split(planted, SplitSpec(seed=seed, manifest=planted.parent / f"m{seed}.csv"))
        split_of = {row.path: row.split for row in plan.rows}
        assert len({split_of[p] for p in EXACT}) == 1 and len({split_of[p] for p in NEAR}) == 1
        assert plan.straddling == ()


def test_allowing_near_duplicates_across_splits_warns_and_still_keeps_exact_ones_together(planted, capsys):
    plan = prepare_split(planted, SplitSpec(manifest=planted.parent / "m.csv", near_duplicates="apart"))
    assert "warning: 1 group(s) of near-duplicate images may be split" in capsys.readouterr().err
    assert len({row.split for row in plan.rows if row.path in EXACT}) == 1


def test_existing_manifest_splitting_a_group_is_reported_and_never_rewritten(planted, capsys):
    manifest = planted.parent / "splits.csv"
    prepare_split(planted, SplitSpec(manifest=manifest))
    text = manifest.read_text()
    lines = text.splitlines()
    # Move one copy of the exact pair to another split, by hand.
    for i, line in enumerate(lines):
        if line.startswith("alive/exact.bmp,"):
            other = {"train": "test", "val": "test", "test": "train"}[line.rsplit(",", 1)[1]]
            lines[i] = f"alive/exact.bmp,alive,{other}"
    manifest.write_text("\n".join(lines) + "\n")
    edited = manifest.read_text()
    dataset = load_dataset(planted, image_size=16, manifest_path=manifest)
    assert re.search("^warning: .*puts 1 group.* of duplicate images in more than one split", capsys.readouterr().err,
                     re.MULTILINE)
    assert manifest.read_text() == edited
    assert len(dataset.straddling) == 1 and set(dataset.straddling[0]["files"]) == set(EXACT)
    report = check_data(planted, manifest_path=manifest)
    assert report.to_dict()["duplicate_groups_across_splits"] == list(dataset.straddling)
    assert "puts 1 duplicate group(s) in more than one split" in report.format_table()


# --------------------------------------------------------------------------- imbalance


def test_imbalance_ratio_warns_above_three(tmp_path):
    for name, count in (("big", 13), ("small", 4)):
        for i in range(count):
            _png(tmp_path / name / f"{i}.png", _noise(np.random.default_rng([len(name), i]), 0.5, 0.1))
    report = check_data(tmp_path).to_dict()
    assert report["imbalance"]["ratio"] == pytest.approx(13 / 4)
    assert "'big' has 3.2x the images of 'small'" in report["imbalance"]["warning"]
    (tmp_path / "big" / "0.png").unlink()
    report = check_data(tmp_path)
    assert report.imbalance_ratio == 3.0 and report.imbalance_warning is None
    assert "WARNING" not in report.format_table()


def test_check_data_command_prints_duplicate_groups_and_imbalance_in_json(planted):
    from typer.testing import CliRunner

    from spheroid_hpo.cli import app

    result = CliRunner().invoke(app, ["check-data", str(planted), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["exact_duplicates"] == [list(EXACT)] and report["near_duplicates"] == [list(NEAR)]
    assert report["imbalance"] == {"ratio": pytest.approx(12 / 9), "warning": None}
    assert report["duplicate_groups_across_splits"] == [] and report["split_manifest"] is None
