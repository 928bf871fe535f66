"""check_data: per-class counts, formats, bit depths and sizes, problem files, and both report forms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from spheroid_hpo.data._check import ClassSummary, DataCheck, check_data
from spheroid_hpo.errors import InputError


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Two classes in every format and depth, plus broken and junk files."""
    (tmp_path / "dead").mkdir()
    (tmp_path / "live" / "day2").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 30), dtype=np.uint8)).save(tmp_path / "dead" / "a.png")
    Image.fromarray(np.zeros((40, 10, 3), dtype=np.uint8)).save(tmp_path / "dead" / "b.jpg")
    tifffile.imwrite(tmp_path / "live" / "c.tif", np.zeros((16, 16), dtype=np.uint16))
    tifffile.imwrite(tmp_path / "live" / "day2" / "d.tif", np.zeros((32, 8), dtype=np.uint16))
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "live" / "e.bmp")
    (tmp_path / "live" / "empty.png").write_bytes(b"")
    (tmp_path / "dead" / "junk.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "dead" / "notes.txt").write_text("imaged on day 1")
    (tmp_path / "live" / "Thumbs.db").write_bytes(b"\x00")
    return tmp_path


def test_rows_count_readable_images_and_describe_them(mixed_folder: Path) -> None:
    report = check_data(mixed_folder)
    assert report.classes == (
        ClassSummary("dead", 2, ("JPEG", "PNG"), (8,), min_size=(10, 20), max_size=(30, 40)),
        ClassSummary("live", 3, ("BMP", "TIFF"), (8, 16), min_size=(4, 4), max_size=(16, 32)),
    )
    assert report.total == 5


def test_problem_files_are_listed_with_their_reason_not_counted(mixed_folder: Path) -> None:
    report = check_data(mixed_folder)
    assert report.problems == (
        ("dead/junk.jpg", "not a recognised image (expected PNG, JPEG, TIFF or BMP data)"),
        ("live/empty.png", "empty file (0 bytes)"),
    )
    assert report.ignored == ("dead/notes.txt", "live/Thumbs.db")


def test_to_dict_is_plain_json(mixed_folder: Path) -> None:
    report = check_data(mixed_folder)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["root"] == str(mixed_folder)
    assert data["total"] == 5
    assert data["classes"][1] == {
        "name": "live",
        "count": 3,
        "formats": ["BMP", "TIFF"],
        "bit_depths": [8, 16],
        "min_size": [4, 4],
        "max_size": [16, 32],
    }
    assert data["problems"][1] == {"path": "live/empty.png", "reason": "empty file (0 bytes)"}
    assert data["ignored"] == ["dead/notes.txt", "live/Thumbs.db"]


def test_format_table_shows_rows_problems_and_ignored_files(mixed_folder: Path) -> None:
    table = check_data(mixed_folder).format_table()
    lines = table.splitlines()
    assert lines[0] == f"data folder {mixed_folder}: 2 classes, 5 readable images"
    assert lines[2].split() == ["class", "images", "formats", "bit", "depths", "min", "size", "max", "size"]
    assert lines[3].split() == ["dead", "2", "JPEG,", "PNG", "8", "10x20", "30x40"]
    assert lines[4].split() == ["live", "3", "BMP,", "TIFF", "8,", "16", "4x4", "16x32"]
    assert lines[5].split() == ["total", "5"]
    assert "2 problem file(s), left out of training:" in lines
    assert "  live/empty.png: empty file (0 bytes)" in lines
    assert "  dead/notes.txt" in lines


def test_a_class_with_only_broken_images_shows_dashes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(tmp_path / "a" / "ok.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    report = check_data(tmp_path)
    assert report.classes[1] == ClassSummary("b", 0, (), (), None, None)
    assert report.format_table().splitlines()[4].split() == ["b", "0", "-", "-", "-", "-"]
    assert json.loads(json.dumps(report.to_dict()))["classes"][1]["min_size"] is None


def test_a_clean_folder_says_there_are_no_problems(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(tmp_path / name / "x.png")
    report = check_data(tmp_path)
    assert report.problems == () and report.ignored == ()
    assert "no problem files" in report.format_table().splitlines()


def test_class_names_pass_through_to_the_scan(mixed_folder: Path) -> None:
    report = check_data(mixed_folder, class_names=["live", "dead"])
    assert [row.name for row in report.classes] == ["live", "dead"]


def test_layout_errors_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        check_data(tmp_path / "missing")


def test_the_report_is_deterministic_despite_the_thread_pool(mixed_folder: Path) -> None:
    report = check_data(mixed_folder)
    assert isinstance(report, DataCheck)
    assert report == check_data(mixed_folder)


def test_a_picture_filed_under_two_classes_is_listed_first_as_a_labelling_problem(tmp_path: Path) -> None:
    from spheroid_hpo.data.demo import render_image

    for label, name in enumerate(("alive", "dead")):
        for i in range(6):
            pixels = render_image(label, size=48, rng=np.random.default_rng([label, i]))
            (tmp_path / name).mkdir(exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    alive = np.asarray(Image.open(tmp_path / "alive" / "0.png"))
    Image.fromarray(alive).save(tmp_path / "dead" / "copy.png")  # exact, under the other class
    Image.fromarray(alive).save(tmp_path / "dead" / "resaved.jpg", quality=85)  # near, same class as copy
    Image.fromarray(np.asarray(Image.open(tmp_path / "alive" / "1.png"))).save(tmp_path / "alive" / "1b.bmp")

    report = check_data(tmp_path)
    assert report.label_conflicts == (
        {"kind": "exact", "files": {"alive/0.png": "alive", "dead/copy.png": "dead"}},
        {"kind": "near", "files": {"alive/0.png": "alive", "dead/copy.png": "dead", "dead/resaved.jpg": "dead"}},
    )  # the same-class pair alive/1.png, alive/1b.bmp is a duplicate but no conflict
    data = json.loads(json.dumps(report.to_dict()))
    assert list(data)[:3] == ["root", "total", "label_conflicts"]
    assert [c["files"] for c in data["label_conflicts"]] == [c["files"] for c in report.label_conflicts]
    assert "labelling mistake" in data["label_conflicts"][0]["problem"]
    lines = report.format_table().splitlines()
    assert lines[2].startswith("WARNING: 2 duplicate group(s) span more than one class")
    assert "labelling mistake" in lines[2]
    assert lines[3] == "  exact: alive/0.png (alive), dead/copy.png (dead)"
    assert lines.index(lines[2]) < next(n for n, line in enumerate(lines) if line.startswith("class "))


def test_a_folder_without_conflicts_has_no_warning_on_top(mixed_folder: Path) -> None:
    report = check_data(mixed_folder)
    assert report.label_conflicts == () and report.to_dict()["label_conflicts"] == []
    assert not report.format_table().splitlines()[2].startswith("WARNING")
