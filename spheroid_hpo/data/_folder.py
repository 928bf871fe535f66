"""Find the labelled images in a ROOT/<class name>/<image> folder, without decoding them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.data._formats import IMAGE_SUFFIXES
from spheroid_hpo.errors import InputError

_LAYOUT = "ROOT/<class name>/<image>"
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})  # OS and zip-tool droppings
_SUFFIX_LIST = " ".join(sorted(IMAGE_SUFFIXES))


@dataclass(frozen=True)
class LabeledFile:
    """One image: its POSIX path relative to the data root, and its class index."""

    path: str
    label: int


@dataclass(frozen=True)
class DataFolder:
    """The images of a data folder, sorted by class then path.

    `ignored` holds the relative paths of files that are not images (notes,
    Thumbs.db, hidden files); a skipped folder is listed once, ending in "/".
    """

    root: Path
    class_names: tuple[str, ...]
    files: tuple[LabeledFile, ...]
    ignored: tuple[str, ...]


def scan_folder(root: str | os.PathLike[str], *, class_names: Sequence[str] | None = None) -> DataFolder:
    """List the images of each class folder under `root` (nested subfolders included).

    Classes are the sorted non-hidden subfolder names, or exactly `class_names`
    in the order given (label i = class_names[i]; other folders are skipped).
    Raises `InputError` for a missing root, images directly in root, fewer than
    two classes, a named class without a folder, or a class with no images.
    """
    root = Path(root)
    _check_root(root)
    folders, ignored = _read_root(root)
    names = _choose_classes(root, folders, class_names)
    _check_utf8_names(root, names)
    ignored += [f"{name}/" for name in folders if name not in names]
    files: list[LabeledFile] = []
    for label, name in enumerate(names):
        images, junk = _walk_class(root, name)
        if not images:
            raise InputError(_empty_class_message(root / name, junk))
        files += (LabeledFile(path, label) for path in images)
        ignored += junk
    return DataFolder(root=root, class_names=names, files=tuple(files), ignored=tuple(sorted(ignored)))


def is_image_name(name: str) -> bool:
    """Whether a file called ``name`` is read as an image: an image suffix, and not hidden or junk."""
    return not _is_junk(name) and Path(name).suffix.lower() in IMAGE_SUFFIXES


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in _JUNK_NAMES


def _check_root(root: Path) -> None:
    if not root.exists():
        raise InputError(f"data folder {root} does not exist; pass --data pointing to {_LAYOUT}")
    if not root.is_dir():
        raise InputError(f"data path {root} is a file, not a folder; pass --data pointing to {_LAYOUT}")


def _read_root(root: Path) -> tuple[list[str], list[str]]:
    """Split the root's entries into candidate class folders and ignored entries."""
    folders, ignored, stray_images = [], [], []
    try:
        with os.scandir(root) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except PermissionError:
        raise InputError(f"data folder {root} cannot be read (permission denied); fix its permissions") from None
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError as error:  # a symbolic link loop: ELOOP
            raise InputError(
                f"{root / entry.name} cannot be followed ({error.strerror}); "
                "remove that link or point it at a real folder"
            ) from None
        if is_dir and _is_junk(entry.name):
            ignored.append(f"{entry.name}/")
        elif is_dir:
            folders.append(entry.name)
        elif is_image_name(entry.name):
            stray_images.append(entry.name)
        else:
            ignored.append(entry.name)
    if stray_images:
        raise InputError(_stray_images_message(root, stray_images))
    return folders, ignored


def _choose_classes(root: Path, folders: list[str], class_names: Sequence[str] | None) -> tuple[str, ...]:
    if class_names is None:
        if len(folders) < 2:
            raise InputError(_too_few_folders_message(root, folders))
        return tuple(folders)
    names = (class_names,) if isinstance(class_names, str) else tuple(class_names)
    if len(names) < 2:
        raise InputError(
            f"class names {list(names)!r} name fewer than two classes; list at least two folders of {root}"
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"class names {list(names)!r} repeat {', '.join(duplicates)}; list each class once")
    missing = [name for name in names if name not in folders]
    if missing:
        raise InputError(
            f"class {', '.join(repr(name) for name in missing)} has no folder in {root}; "
            f"folders found: {_quoted(folders) or 'none'}. Fix the class names or add ROOT/<class name>/ folders"
        )
    return names


def find_images(folder: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Relative POSIX paths of the images under ``folder`` (recursively) and of the ignored entries.

    Hidden files and folders, OS droppings (Thumbs.db, __MACOSX) and files without an
    image suffix are ignored; a skipped folder is listed once, ending in "/".
    """
    folder = Path(folder)
    images, ignored = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = Path(dirpath).relative_to(folder).as_posix()
        prefix = "" if rel_dir == "." else f"{rel_dir}/"
        skipped = [d for d in dirnames if _is_junk(d)]
        ignored += (f"{prefix}{d}/" for d in skipped)
        dirnames[:] = [d for d in dirnames if d not in skipped]  # os.walk does not descend into these
        for filename in filenames:
            target = images if is_image_name(filename) else ignored
            target.append(f"{prefix}{filename}")
    return sorted(images), ignored


def _walk_class(root: Path, name: str) -> tuple[list[str], list[str]]:
    """Relative POSIX paths (to ``root``) of the images and of the ignored entries under one class folder."""
    images, ignored = find_images(root / name)
    return [f"{name}/{path}" for path in images], [f"{name}/{path}" for path in ignored]


def _check_utf8_names(root: Path, names: Sequence[str]) -> None:
    """Class names reach model.pt, ONNX metadata (UTF-8 by the protobuf spec), figures and reports;
    a folder name whose bytes are not UTF-8 (os gives it as surrogates) cannot go there."""
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                f"class folder name {os.fsencode(name)!r} in {root} is not valid UTF-8; rename the folder "
                "(class names are written into the model, its exports and the reports)"
            ) from None


def _stray_images_message(root: Path, names: list[str]) -> str:
    example = names[0]
    return (
        f"{len(names)} image(s) sit directly in the data folder {root} (e.g. {example!r}); "
        f"the layout must be {_LAYOUT}: move each image into a folder named after its class, "
        f"e.g. {root / '<class name>' / example}"
    )


def _too_few_folders_message(root: Path, folders: list[str]) -> str:
    found = f"only one class folder ({folders[0]!r})" if folders else "no class folders"
    return (
        f"data folder {root} has {found}; a classifier needs at least two. "
        f"Lay the images out as {_LAYOUT}, one folder per class"
    )


def _empty_class_message(folder: Path, ignored: list[str]) -> str:
    seen = f" (it holds only {_quoted(ignored[:3])}{', ...' if len(ignored) > 3 else ''})" if ignored else ""
    return (
        f"class folder {folder} has no image files{seen}; add images with a suffix in {_SUFFIX_LIST}, "
        f"or pass --classes naming only the classes to use"
    )


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)
