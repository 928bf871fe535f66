"""The one write-then-rename helper, for files and folders: a reader never sees half of either."""

from __future__ import annotations

import pytest

from spheroid_hpo.atomic_write import replacing, replacing_folder, write_text_atomically


def siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_a_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one(tmp_path):
    target = tmp_path / "model.pt"
    write_text_atomically(target, "old")
    with pytest.raises(RuntimeError), replacing(target) as partial:
        partial.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert siblings(target) == ["model.pt"]  # no partial file left behind

    write_text_atomically(target, "new")
    assert target.read_text() == "new"
    assert siblings(target) == ["model.pt"]


def test_a_folder_is_swapped_in_whole_and_a_failed_fill_leaves_the_old_one(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("old report")

    with pytest.raises(RuntimeError), replacing_folder(report, replace=True) as staging:
        (staging / "report.md").write_text("half a report")
        raise RuntimeError("a figure failed")
    assert (report / "report.md").read_text() == "old report"
    assert siblings(report) == ["report"]

    with replacing_folder(report, replace=True) as staging:
        assert staging.parent == report.parent and staging.name.startswith(".report.")
        (staging / "report.md").write_text("new report")
    assert [p.name for p in report.iterdir()] == ["report.md"]
    assert (report / "report.md").read_text() == "new report"
    assert siblings(report) == ["report"]  # the old folder is gone too


def test_without_replace_a_folder_only_takes_a_missing_or_empty_place(tmp_path):
    fresh = tmp_path / "demo"
    with replacing_folder(fresh, replace=False) as staging:
        (staging / "a.png").write_bytes(b"png")
    assert [p.name for p in fresh.iterdir()] == ["a.png"]

    empty = tmp_path / "empty"
    empty.mkdir()
    with replacing_folder(empty, replace=False) as staging:
        (staging / "b.png").write_bytes(b"png")
    assert [p.name for p in empty.iterdir()] == ["b.png"]

    # Another writer filled the folder meanwhile: its files stay, and nothing of ours is left.
    with pytest.raises(OSError), replacing_folder(fresh, replace=False) as staging:
        (staging / "c.png").write_bytes(b"png")
    assert [p.name for p in fresh.iterdir()] == ["a.png"]
    assert siblings(fresh) == ["demo", "empty"]
