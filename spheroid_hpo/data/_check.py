"""Summarise a data folder before training: what each class holds, which files are broken,
which images are duplicates (and whether the split manifest puts them on both sides), and
how imbalanced the classes are."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.data._duplicates import Duplicates, find_duplicates, straddling
from spheroid_hpo.data._folder import scan_folder
from spheroid_hpo.data._formats import ImageInfo, UnreadableImage, inspect_image
from spheroid_hpo.data._manifest import DEFAULT_MANIFEST_NAME, read_manifest

# Largest-to-smallest class ratio above which check-data warns: beyond it, a plain
# cross-entropy tends to give up on the smallest class (class_weights = "balanced" helps).
IMBALANCE_WARNING_RATIO = 3.0

_MAX_IGNORED_SHOWN = 10
_CONFLICT_PROBLEM = (
    "the same image is filed under more than one class, most likely a labelling mistake: "
    "keep the copy in its right class folder and delete the others"
)
_HEADER = ("class", "images", "formats", "bit depths", "min size", "max size")


def imbalance_warning(counts: dict[str, int]) -> str | None:
    """One line when the largest class has over IMBALANCE_WARNING_RATIO times the images of the
    smallest (class name -> images), else None; check-data and a new split print it."""
    if not counts or min(counts.values()) == 0:
        return None
    largest, smallest = max(counts, key=counts.get), min(counts, key=counts.get)
    ratio = counts[largest] / counts[smallest]
    if ratio <= IMBALANCE_WARNING_RATIO:
        return None
    return (
        f"classes are imbalanced: '{largest}' has {ratio:.1f}x the images of "
        f"'{smallest}' ({counts[largest]} vs {counts[smallest]}, warning above "
        f"{IMBALANCE_WARNING_RATIO:g}x); add class_weights = {{ choices = ['none', 'balanced'] }} "
        f"to the search space, or collect more '{smallest}' images"
    )


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
    duplicates: Duplicates = Duplicates()
    manifest: Path | None = None  # the split manifest checked for straddling groups, if it exists
    straddling: tuple[dict, ...] = ()  # duplicate groups with files in more than one split of it
    # Duplicate groups whose files lie in more than one class folder: {"kind", "files": {path: class}}.
    label_conflicts: tuple[dict, ...] = ()

    @property
    def imbalance_ratio(self) -> float | None:
        """Images of the largest class over images of the smallest; None when a class is empty."""
        counts = [row.count for row in self.classes]
        return max(counts) / min(counts) if counts and min(counts) > 0 else None

    @property
    def imbalance_warning(self) -> str | None:
        """The imbalance line check-data prints (see ``imbalance_warning``), or None."""
        return imbalance_warning({row.name: row.count for row in self.classes})

    @property
    def total(self) -> int:
        """Readable images over all classes."""
        return sum(row.count for row in self.classes)

    def to_dict(self) -> dict:
        """Plain lists, dicts, strings and numbers, ready for `json.dumps`."""
        return {
            "root": str(self.root),
            "total": self.total,
            "label_conflicts": [
                {**conflict, "problem": _CONFLICT_PROBLEM} for conflict in self.label_conflicts
            ],
            "classes": [_row_dict(row) for row in self.classes],
            "problems": [{"path": path, "reason": reason} for path, reason in self.problems],
            "ignored": list(self.ignored),
            **self.duplicates.to_dict(),
            "split_manifest": str(self.manifest) if self.manifest else None,
            "duplicate_groups_across_splits": list(self.straddling),
            "imbalance": {"ratio": self.imbalance_ratio, "warning": self.imbalance_warning},
        }

    def format_table(self) -> str:
        """A plain-text table for the terminal, with problem and ignored files listed under it."""
        rows = [_row_cells(row) for row in self.classes] + [("total", str(self.total), "", "", "", "")]
        lines = [f"data folder {self.root}: {len(self.classes)} classes, {self.total} readable images", ""]
        lines += _conflict_lines(self.label_conflicts)
        lines += _table_lines(_HEADER, rows)
        lines += _problem_lines(self.problems) + _ignored_lines(self.ignored)
        lines += _duplicate_lines(self.duplicates) + self._manifest_lines() + self._imbalance_lines()
        return "\n".join(lines)

    def _manifest_lines(self) -> list[str]:
        if self.manifest is None:
            return []
        if not self.straddling:
            return ["", f"split manifest {self.manifest}: no duplicate group crosses splits"]
        lines = ["", f"WARNING: split manifest {self.manifest} puts {len(self.straddling)} duplicate "
                 f"group(s) in more than one split (leakage; delete it to re-split):"]
        for group in self.straddling:
            lines.append("  " + ", ".join(f"{path} ({split})" for path, split in group["files"].items()))
        return lines

    def _imbalance_lines(self) -> list[str]:
        ratio = self.imbalance_ratio
        if ratio is None:
            return []
        warning = self.imbalance_warning
        return ["", f"imbalance: largest/smallest class = {ratio:.1f}"] + ([f"WARNING: {warning}"] if warning else [])


def check_data(
    root: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    manifest_path: str | os.PathLike[str] | None = None,
) -> DataCheck:
    """Scan `root` like `scan_folder`, read every image's header and find duplicates.

    Layout errors raise `InputError`; unreadable images do not raise but are
    listed in `problems` with their reason and left out of the counts. When the
    split manifest (default ROOT/splits.csv) exists, the duplicate groups it puts
    in more than one split are listed; it is only read, never rewritten.
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
    unreadable = {path for path, _ in problems}
    duplicates = find_duplicates(folder.root, [f.path for f in folder.files if f.path not in unreadable])
    class_of = {file.path: folder.class_names[file.label] for file in folder.files}
    mixed = set(duplicates.mixed_labels(class_of))
    conflicts = [
        {"kind": kind, "files": {path: class_of[path] for path in group}}
        for kind, groups in (("exact", duplicates.exact), ("near", duplicates.near))
        for group in groups if group in mixed
    ]
    manifest = Path(manifest_path) if manifest_path is not None else folder.root / DEFAULT_MANIFEST_NAME
    crossing: list[dict] = []
    if manifest.exists():
        split_of = {row.path: row.split for row in read_manifest(manifest)}
        crossing = straddling(duplicates.groups(near=True), split_of)
    return DataCheck(
        root=folder.root, classes=classes, problems=tuple(problems), ignored=folder.ignored,
        duplicates=duplicates, manifest=manifest if manifest.exists() else None, straddling=tuple(crossing),
        label_conflicts=tuple(conflicts),
    )


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


def _duplicate_lines(duplicates: Duplicates) -> list[str]:
    lines = []
    for kind, groups in (("exact duplicate", duplicates.exact), ("near-duplicate", duplicates.near)):
        if not groups:
            lines += ["", f"no {kind} images"]
            continue
        lines += ["", f"{len(groups)} {kind} group(s), kept in one split when splitting:"]
        lines += [f"  {i}: " + ", ".join(group) for i, group in enumerate(groups, start=1)]
    return lines


def _conflict_lines(conflicts: tuple[dict, ...]) -> list[str]:
    # Listed before anything else: a wrong label poisons training and scores alike.
    if not conflicts:
        return []
    lines = [f"WARNING: {len(conflicts)} duplicate group(s) span more than one class; {_CONFLICT_PROBLEM}:"]
    for conflict in conflicts:
        files = ", ".join(f"{path} ({name})" for path, name in conflict["files"].items())
        lines.append(f"  {conflict['kind']}: {files}")
    return lines + [""]
