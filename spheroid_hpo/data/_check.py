"""Summarise a data folder before training: what each class holds and which files are broken."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.data._folder import scan_folder
from spheroid_hpo.data._formats import ImageInfo, UnreadableImage, inspect_image

_MAX_IGNORED_SHOWN = 10
_HEADER = ("class", "images", "formats", "bit depths", "min size", "max size")


@dataclass(frozen=True)
class ClassSummary:
    """What the readable images of one class look like.

    Sizes are (width, height): `min_size` is the smallest width and the
    smallest height seen (they may come from different images), and both
    sizes are None when no image of the class is readable.
    """

    name: str
    count: int
    formats: tuple[str, ...]
    bit_depths: tuple[int, ...]
    min_size: tuple[int, int] | None
    max_size: tuple[int, int] | None


@dataclass(frozen=True)
class DataCheck:
    """The result of `check_data`: one row per class, the unreadable files and the ignored ones."""

    root: Path
    classes: tuple[ClassSummary, ...]
    problems: tuple[tuple[str, str], ...]  # (relative path, reason)
    ignored: tuple[str, ...]

    @property
    def total(self) -> int:
        """Readable images over all classes."""
        return sum(row.count for row in self.classes)

    def to_dict(self) -> dict:
        """Plain lists, dicts, strings and numbers, ready for `json.dumps`."""
        return {
            "root": str(self.root),
            "total": self.total,
            "classes": [_row_dict(row) for row in self.classes],
            "problems": [{"path": path, "reason": reason} for path, reason in self.problems],
            "ignored": list(self.ignored),
        }

    def format_table(self) -> str:
        """A plain-text table for the terminal, with problem and ignored files listed under it."""
        rows = [_row_cells(row) for row in self.classes] + [("total", str(self.total), "", "", "", "")]
        lines = [f"data folder {self.root}: {len(self.classes)} classes, {self.total} readable images", ""]
        lines += _table_lines(_HEADER, rows)
        lines += _problem_lines(self.problems) + _ignored_lines(self.ignored)
        return "\n".join(lines)


def check_data(root: str | os.PathLike[str], *, class_names: Sequence[str] | None = None) -> DataCheck:
    """Scan `root` like `scan_folder` and read every image's header.

    Layout errors raise `InputError`; unreadable images do not raise but are
    listed in `problems` with their reason and left out of the counts.
    """
    folder = scan_folder(root, class_names=class_names)
    paths = [folder.root / file.path for file in folder.files]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # header reads are I/O bound
        results = list(pool.map(_inspect_or_reason, paths))
    infos: list[list[ImageInfo]] = [[] for _ in folder.class_names]
    problems = []
    for file, result in zip(folder.files, results, strict=True):
        if isinstance(result, ImageInfo):
            infos[file.label].append(result)
        else:
            problems.append((file.path, result))
    classes = tuple(_summarise(name, class_infos) for name, class_infos in zip(folder.class_names, infos, strict=True))
    return DataCheck(root=folder.root, classes=classes, problems=tuple(problems), ignored=folder.ignored)


def _inspect_or_reason(path: Path) -> ImageInfo | str:
    try:
        return inspect_image(path)
    except UnreadableImage as exc:
        return str(exc)


def _summarise(name: str, infos: list[ImageInfo]) -> ClassSummary:
    widths = [info.width for info in infos]
    heights = [info.height for info in infos]
    return ClassSummary(
        name=name,
        count=len(infos),
        formats=tuple(sorted({info.format for info in infos})),
        bit_depths=tuple(sorted({info.bit_depth for info in infos})),
        min_size=(min(widths), min(heights)) if infos else None,
        max_size=(max(widths), max(heights)) if infos else None,
    )


def _row_dict(row: ClassSummary) -> dict:
    return {
        "name": row.name,
        "count": row.count,
        "formats": list(row.formats),
        "bit_depths": list(row.bit_depths),
        "min_size": list(row.min_size) if row.min_size else None,
        "max_size": list(row.max_size) if row.max_size else None,
    }


def _row_cells(row: ClassSummary) -> tuple[str, ...]:
    return (
        row.name,
        str(row.count),
        ", ".join(row.formats) or "-",
        ", ".join(map(str, row.bit_depths)) or "-",
        _size_text(row.min_size),
        _size_text(row.max_size),
    )


def _size_text(size: tuple[int, int] | None) -> str:
    return f"{size[0]}x{size[1]}" if size else "-"


def _table_lines(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    table = [header, *rows]
    widths = [max(len(cells[column]) for cells in table) for column in range(len(header))]
    return [_format_row(cells, widths) for cells in table]


def _format_row(cells: tuple[str, ...], widths: list[int]) -> str:
    padded = [
        cell.rjust(width) if column == 1 else cell.ljust(width)  # counts read best right-aligned
        for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(padded).rstrip()


def _problem_lines(problems: tuple[tuple[str, str], ...]) -> list[str]:
    if not problems:
        return ["", "no problem files"]
    return ["", f"{len(problems)} problem file(s), left out of training:"] + [
        f"  {path}: {reason}" for path, reason in problems
    ]


def _ignored_lines(ignored: tuple[str, ...]) -> list[str]:
    if not ignored:
        return []
    shown = [f"  {path}" for path in ignored[:_MAX_IGNORED_SHOWN]]
    if len(ignored) > _MAX_IGNORED_SHOWN:
        shown.append(f"  ... and {len(ignored) - _MAX_IGNORED_SHOWN} more")
    return ["", f"{len(ignored)} ignored file(s) (not images):", *shown]
