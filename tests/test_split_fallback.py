"""Near-duplicates never make a split impossible on their own (issue 20, points 5 and 7).

A class whose images sit in too few near-duplicate groups to reach every split is split anyway,
keeping only exact duplicates and the user's groups together, with one printed line that names
the largest near group and what was relaxed; the relaxation is recorded in metrics.json and on
the study. Exact duplicates and user groups stay hard constraints with their clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from study_files import write_tiny_study

from spheroid_hpo.data import SplitSpec, prepare_split, read_manifest
from spheroid_hpo.data.demo import render_image
from spheroid_hpo.errors import InputError

SIZE = 64
RELAXED = "warning: near-duplicate groups leave no stratified split"


def _image(label: int, index: int) -> np.ndarray:
    return render_image(label, size=SIZE, rng=np.random.default_rng([11, label, index]))


def _folder(root: Path, *, copy: str) -> Path:
    """Two classes of 8 distinct images (one with an exact copy), and 'haze': two images, each with one copy.

    ``copy`` is ``near`` (JPEG q90, 3% brighter: a near-duplicate) or ``exact`` (the same pixels as BMP).
    'haze' then has 4 images in only 2 duplicate groups, too few to put one in each of 3 splits.
    """
    for label, name in enumerate(("alive", "dead")):
        (root / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(_image(label, i)).save(root / name / f"{name}{i}.png")
    Image.fromarray(_image(0, 0)).save(root / "alive" / "alive0-copy.bmp")  # an exact duplicate
    (root / "haze").mkdir()
    for i in range(2):
        pixels = _image(2, i)
        Image.fromarray(pixels).save(root / "haze" / f"h{i}.png")
        if copy == "near":
            ImageEnhance.Brightness(Image.fromarray(pixels)).enhance(1.03).save(
                root / "haze" / f"h{i}-copy.jpg", quality=90)
        else:
            Image.fromarray(pixels).save(root / "haze" / f"h{i}-copy.bmp")
    return root


@pytest.fixture
def near_folder(tmp_path) -> Path:
    return _folder(tmp_path / "data", copy="near")


def test_near_groups_that_leave_no_split_are_relaxed_with_one_line(near_folder, tmp_path, capsys):
    plan = prepare_split(near_folder, SplitSpec(manifest=tmp_path / "splits.csv"))

    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(RELAXED)]
    assert len(lines) == 1, lines
    assert "class 'haze' has 4 image(s) in only 2 group(s)" in lines[0]
    assert "only exact duplicates are kept together" in lines[0]
    assert ("2 near-duplicate group(s) may straddle splits; the largest has 2 files (first: haze/h0-copy.jpg)"
            in lines[0])
    assert plan.relaxed == lines[0].removeprefix("warning: ")
    rows = read_manifest(tmp_path / "splits.csv")
    assert {row.split for row in rows if row.class_name == "haze"} == {"train", "val", "test"}
    split_of = {row.path: row.split for row in rows}
    assert split_of["alive/alive0.png"] == split_of["alive/alive0-copy.bmp"]  # exact copies still together


def test_a_split_that_holds_with_near_groups_relaxes_nothing(near_folder, tmp_path, capsys):
    for i in range(2, 6):  # four more distinct haze images: enough groups for three splits
        Image.fromarray(_image(2, i)).save(near_folder / "haze" / f"h{i}.png")
    plan = prepare_split(near_folder, SplitSpec(manifest=tmp_path / "splits.csv"))
    assert plan.relaxed is None and RELAXED not in capsys.readouterr().err
    split_of = {row.path: row.split for row in plan.rows}
    assert split_of["haze/h0.png"] == split_of["haze/h0-copy.jpg"]
    assert split_of["haze/h1.png"] == split_of["haze/h1-copy.jpg"]


def test_near_duplicates_apart_needs_no_relaxing(near_folder, tmp_path, capsys):
    plan = prepare_split(near_folder, SplitSpec(manifest=tmp_path / "splits.csv", near_duplicates="apart"))
    err = capsys.readouterr().err
    assert plan.relaxed is None and RELAXED not in err
    assert "near-duplicate images may be split across train, val and test" in err


def test_exact_duplicates_stay_a_hard_constraint(tmp_path):
    folder = _folder(tmp_path / "data", copy="exact")
    with pytest.raises(InputError, match=r"class 'haze' has 4 image\(s\) in only 2 group\(s\).*duplicate images "
                                         r"count as one group"):
        prepare_split(folder, SplitSpec(manifest=tmp_path / "splits.csv"))
    assert not (tmp_path / "splits.csv").exists()


def test_user_groups_stay_a_hard_constraint(near_folder, tmp_path):
    # The user puts each haze image and its copy in one group: relaxing near-duplicates cannot help.
    rows = [f"{path.relative_to(near_folder).as_posix()},{path.stem.removesuffix('-copy')}"
            for path in sorted(near_folder.rglob("*.*"))]
    (tmp_path / "groups.csv").write_text("path,group\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError, match=r"class 'haze' has 4 image\(s\) in only 2 group\(s\)"):
        prepare_split(near_folder, SplitSpec(manifest=tmp_path / "splits.csv", groups_csv=tmp_path / "groups.csv"))
    assert not (tmp_path / "splits.csv").exists()


def test_train_relaxes_records_it_and_prints_every_line_under_pythonwarnings_ignore(near_folder, tmp_path):
    (near_folder / "alive" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # many lab environments set it
    result = subprocess.run(
        [sys.executable, "-m", "spheroid_hpo", "train", "--data", str(near_folder), "--out", str(out),
         "--arch", "squeezenet1_1", "--epochs", "1", "--batch-size", "4", "--image-size", "32", "--device", "cpu",
         "--precision", "fp32", "--split-manifest", str(tmp_path / "splits.csv")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert sum(line.startswith(RELAXED) for line in lines) == 1, result.stderr[-2000:]
    assert any(line.startswith(f"warning: skipping {near_folder / 'alive' / 'broken.png'}") for line in lines)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split_relaxed"].startswith("near-duplicate groups leave no stratified split")
    assert metrics["config"]["split"]["near_duplicates"] == "together"


def test_a_study_records_the_relaxed_split_and_a_relaunch_keeps_it(near_folder, tmp_path, capsys):
    from spheroid_hpo.tuning.create import create_study_family
    from spheroid_hpo.tuning.study_file import load_study_config

    study_file = write_tiny_study(tmp_path, n_trials=1)
    config = load_study_config(study_file, data=near_folder)
    first = create_study_family(config=config, runs_dir=tmp_path / "runs")
    assert first.data.split_relaxed.startswith("near-duplicate groups leave no stratified split")
    assert capsys.readouterr().err.count(RELAXED) == 1
    again = create_study_family(config=config, runs_dir=tmp_path / "runs")  # reads the split it made
    for study in again.studies.values():
        from spheroid_hpo.tuning import records

        assert records.data_source(study.user_attrs).split_relaxed == first.data.split_relaxed


def test_a_new_split_of_imbalanced_classes_prints_the_imbalance_line(near_folder, tmp_path, capsys):
    for i in range(8, 20):  # 'dead' grows to 20 images against haze's 4: 5x
        Image.fromarray(_image(1, i)).save(near_folder / "dead" / f"dead{i}.png")
    prepare_split(near_folder, SplitSpec(manifest=tmp_path / "splits.csv"))
    lines = [line for line in capsys.readouterr().err.splitlines() if "imbalanced" in line]
    assert lines == ["warning: classes are imbalanced: 'dead' has 5.0x the images of 'haze' (20 vs 4, warning above "
                     "3x); add class_weights = { choices = ['none', 'balanced'] } to the search space, or collect "
                     "more 'haze' images"]
