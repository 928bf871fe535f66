"""scan_folder: the ROOT/<class name>/<image> layout, the files it ignores and every layout mistake."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from spheroid_hpo.data._folder import DataFolder, LabeledFile, scan_folder
from spheroid_hpo.errors import InputError


def _touch(root: Path, *paths: str) -> Path:
    """Create files (contents irrelevant: scanning never decodes) and return the root."""
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"not decoded")
    return root


def test_classes_are_sorted_folders_and_files_carry_their_label(tmp_path: Path) -> None:
    root = _touch(tmp_path, "live/b.png", "live/a.PNG", "dead/x.tif", "dead/well_2/y.JPEG")
    folder = scan_folder(root)
    assert folder == DataFolder(
        root=root,
        class_names=("dead", "live"),
        files=(
            LabeledFile("dead/well_2/y.JPEG", 0),  # nested subfolders belong to their class
            LabeledFile("dead/x.tif", 0),
            LabeledFile("live/a.PNG", 1),
            LabeledFile("live/b.png", 1),
        ),
        ignored=(),
    )


def test_every_image_suffix_is_accepted_in_any_case(tmp_path: Path) -> None:
    names = ["a.png", "b.jpg", "c.jpeg", "d.tif", "e.tiff", "f.bmp", "g.TIFF", "h.Jpg"]
    root = _touch(tmp_path, *(f"one/{name}" for name in names), "two/z.png")
    assert [file.path for file in scan_folder(root).files if file.label == 0] == [f"one/{name}" for name in names]


def test_junk_and_hidden_entries_are_ignored_but_listed(tmp_path: Path) -> None:
    root = _touch(
        tmp_path,
        "README.txt",
        ".DS_Store",
        "a/img.png",
        "a/Thumbs.db",
        "a/desktop.ini",
        "a/notes.txt",
        "a/._img.png",  # macOS resource fork: hidden, even with an image suffix
        "a/.ipynb_checkpoints/img-checkpoint.png",
        "b/img.png",
        ".cache/x.png",
        "__MACOSX/a/img.png",
    )
    folder = scan_folder(root)
    assert folder.class_names == ("a", "b")
    assert [file.path for file in folder.files] == ["a/img.png", "b/img.png"]
    assert folder.ignored == (
        ".DS_Store",
        ".cache/",
        "README.txt",
        "__MACOSX/",
        "a/._img.png",
        "a/.ipynb_checkpoints/",
        "a/Thumbs.db",
        "a/desktop.ini",
        "a/notes.txt",
    )


def test_scanning_does_not_decode_images(tmp_path: Path) -> None:
    root = _touch(tmp_path, "a/corrupt.png", "b/empty.png")
    (root / "b/empty.png").write_bytes(b"")
    assert len(scan_folder(root).files) == 2


def test_explicit_class_names_fix_the_labels_and_skip_other_folders(tmp_path: Path) -> None:
    root = _touch(tmp_path, "a/1.png", "b/2.png", "c/3.png")
    folder = scan_folder(root, class_names=["c", "a"])
    assert folder.class_names == ("c", "a")
    assert folder.files == (LabeledFile("c/3.png", 0), LabeledFile("a/1.png", 1))
    assert folder.ignored == ("b/",)


def test_missing_folder_names_the_path_and_the_layout(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as error:
        scan_folder(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value)
    assert "ROOT/<class name>/<image>" in str(error.value)


def test_a_file_instead_of_a_folder_is_rejected(tmp_path: Path) -> None:
    _touch(tmp_path, "data.zip")
    with pytest.raises(InputError, match="is a file, not a folder"):
        scan_folder(tmp_path / "data.zip")


def test_images_directly_in_root_explain_the_layout(tmp_path: Path) -> None:
    root = _touch(tmp_path, "img_001.png", "img_002.png", "a/x.png", "b/y.png")
    with pytest.raises(InputError) as error:
        scan_folder(root)
    message = str(error.value)
    assert "2 image(s) sit directly in the data folder" in message
    assert "'img_001.png'" in message
    assert "move each image into a folder named after its class" in message


def test_a_single_class_folder_is_not_enough(tmp_path: Path) -> None:
    root = _touch(tmp_path, "live/x.png", "notes.txt")
    with pytest.raises(InputError, match=r"only one class folder \('live'\).*at least two"):
        scan_folder(root)


def test_a_root_without_class_folders_says_so(tmp_path: Path) -> None:
    root = _touch(tmp_path, "notes.txt")
    with pytest.raises(InputError, match=r"no class folders.*ROOT/<class name>/<image>"):
        scan_folder(root)


def test_an_explicit_class_without_a_folder_lists_the_folders_found(tmp_path: Path) -> None:
    root = _touch(tmp_path, "dead/x.png", "live/y.png")
    with pytest.raises(InputError) as error:
        scan_folder(root, class_names=["dead", "alive"])
    message = str(error.value)
    assert "class 'alive' has no folder" in message
    assert "folders found: 'dead', 'live'" in message


@pytest.mark.parametrize(
    ("class_names", "expected"),
    [
        (["dead"], "fewer than two classes"),
        ("dead", "fewer than two classes"),
        (["dead", "live", "dead"], "repeat dead"),
    ],
)
def test_explicit_class_names_must_be_two_or_more_distinct(tmp_path: Path, class_names, expected: str) -> None:
    root = _touch(tmp_path, "dead/x.png", "live/y.png")
    with pytest.raises(InputError, match=expected):
        scan_folder(root, class_names=class_names)


def test_an_empty_class_folder_is_named_with_what_it_holds(tmp_path: Path) -> None:
    root = _touch(tmp_path, "dead/x.png", "live/notes.txt")
    with pytest.raises(InputError) as error:
        scan_folder(root)
    message = str(error.value)
    assert f"class folder {root / 'live'} has no image files" in message
    assert "'live/notes.txt'" in message
    assert ".png" in message  # says which suffixes count


def test_an_empty_class_folder_without_any_files(tmp_path: Path) -> None:
    root = _touch(tmp_path, "dead/x.png")
    (root / "live").mkdir()
    with pytest.raises(InputError, match="has no image files; add images"):
        scan_folder(root)


def test_data_folder_is_frozen(tmp_path: Path) -> None:
    folder = scan_folder(_touch(tmp_path, "a/x.png", "b/y.png"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        folder.class_names = ()  # type: ignore[misc]
