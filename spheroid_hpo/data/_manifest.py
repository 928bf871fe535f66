"""The split manifest CSV (``path,class,split[,group]``): written once, read by every later run.

A split is made once and written to a manifest so that every later run, trial and
evaluation sees exactly the same images in each split; its fingerprint (of the rows
and the files' sizes) tells whether a folder still holds the data a study was made on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spheroid_hpo.atomic_write import replacing
from spheroid_hpo.errors import InputError

if TYPE_CHECKING:
    from spheroid_hpo.data._folder import LabeledFile

from spheroid_hpo.data._split import SPLIT_NAMES

DEFAULT_MANIFEST_NAME = "splits.csv"
_REQUIRED_COLUMNS = ("path", "class", "split")
_GROUP_COLUMN = "group"


@dataclass(frozen=True)
class ManifestRow:
    """One line of a split manifest: an image (POSIX path relative to the data root), its class
    name, its split and, for group-aware splits, its group."""

    path: str
    class_name: str
    split: str
    group: str | None = None


# --------------------------------------------------------------------------- manifest


def manifest_rows(
    files: Sequence[LabeledFile],
    class_names: Sequence[str],
    splits: Sequence[str],
    groups: Sequence[str] | None = None,
) -> list[ManifestRow]:
    """Manifest rows for ``files`` (sorted by path) with their class names, splits and groups."""
    if len(splits) != len(files) or (groups is not None and len(groups) != len(files)):
        raise ValueError("pass exactly one split (and one group, if any) per file")
    unknown = sorted(set(splits) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"unknown split names {unknown}; use {SPLIT_NAMES}")
    rows = [
        ManifestRow(
            path=file.path,
            class_name=class_names[file.label],
            split=split,
            group=None if groups is None else groups[i],
        )
        for i, (file, split) in enumerate(zip(files, splits))
    ]
    return sorted(rows, key=lambda row: row.path)


def write_manifest(
    path: str | os.PathLike,
    files: Sequence[LabeledFile],
    class_names: Sequence[str],
    splits: Sequence[str],
    groups: Sequence[str] | None = None,
) -> list[ManifestRow]:
    """Write the split manifest CSV (``path,class,split`` plus ``group`` when groups are given)
    and return its rows. Raises OSError when ``path`` cannot be written."""
    rows = manifest_rows(files, class_names, splits, groups)
    columns = [*_REQUIRED_COLUMNS, *([_GROUP_COLUMN] if groups is not None else [])]
    # Write then rename, so an interrupted run never leaves a half manifest to be reused.
    # surrogateescape writes a file name that is not UTF-8 (caf\xe9.png) back as its own bytes, and
    # read_manifest reads them back to the same str, so the row still finds its file.
    with (replacing(Path(path)) as partial,
          open(partial, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle):
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            values = [row.path, row.class_name, row.split, row.group]
            writer.writerow(values[: len(columns)])
    return rows


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Read a split manifest written by write_manifest (or by hand); InputError if it is
    malformed."""
    path = Path(path)
    fix = f"delete {path} to make a new split, or pass another --split-manifest path"
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [name for name in _REQUIRED_COLUMNS if name not in columns]
            if missing:
                raise InputError(
                    f"split manifest {path} has columns {list(columns)} and lacks {missing}; {fix}"
                )
            rows = [_manifest_row(raw, line, path, fix) for line, raw in enumerate(reader, start=2)]
    except FileNotFoundError:
        raise InputError(f"split manifest {path} does not exist; {fix}") from None
    except IsADirectoryError:
        raise InputError(f"split manifest {path} is a folder, not a CSV file; pass a file path such as "
                         f"{path / DEFAULT_MANIFEST_NAME} to --split-manifest") from None
    except UnicodeDecodeError:
        raise InputError(f"split manifest {path} is not a UTF-8 CSV file; {fix}") from None

    if not rows:
        raise InputError(f"split manifest {path} lists no images; {fix}")
    seen: set[str] = set()
    for row in rows:
        if row.path in seen:
            raise InputError(f"split manifest {path} lists {row.path} twice; {fix}")
        seen.add(row.path)
    return rows


def _manifest_row(raw: dict[str, str | None], line: int, path: Path, fix: str) -> ManifestRow:
    # Paths and class names stay exact: a class folder may start or end with a space.
    values = {key: raw.get(key) or "" for key in (*_REQUIRED_COLUMNS, _GROUP_COLUMN)}
    values["split"] = values["split"].strip()
    if not values["path"] or not values["class"]:
        raise InputError(f"split manifest {path} line {line} lacks a path or a class; {fix}")
    if values["split"] not in SPLIT_NAMES:
        raise InputError(
            f"split manifest {path} line {line} ({values['path']}) has split "
            f"'{values['split']}', not one of {', '.join(SPLIT_NAMES)}; {fix}"
        )
    return ManifestRow(
        path=values["path"],
        class_name=values["class"],
        split=values["split"],
        group=values[_GROUP_COLUMN] or None,
    )


def manifest_fingerprint(rows: Sequence[ManifestRow], *, root: str | os.PathLike | None = None) -> str:
    """SHA-256 hex digest of the sorted (path, class, split) triples; the row order and the
    group column do not change it.

    With ``root``, each file's size in bytes joins its triple, so two folders that list the
    same names but hold different images (another export, another crop) differ too.
    """
    def entry(row: ManifestRow) -> list:
        size = (Path(root) / row.path).stat().st_size if root is not None and (Path(root) / row.path).exists() else None
        return [row.path, row.class_name, row.split] + ([size] if root is not None else [])

    # JSON-encode each entry so that commas or newlines inside names cannot collide.
    lines = sorted(json.dumps(entry(row)) for row in rows)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


# (absolute path, size, mtime in ns) -> digest of the file's bytes. A process that loads the same
# folder again (report over several architectures, a worker per trial) reads each file once. No
# cache on disk: hashing the 3,422 real TIFFs of ifc_cellcycle (15 MB) took 0.15 s, decoding 500
# of them 0.56 s, and every load decodes every file anyway.
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def content_digest(rows: Sequence[ManifestRow], *, root: str | os.PathLike) -> str:
    """SHA-256 hex digest of each listed file's bytes with its path, class and split.

    Unlike ``manifest_fingerprint`` it changes when files of the same sizes are swapped between
    classes or overwritten (uncompressed TIFF and BMP crops all have one size). A missing or
    unreadable file counts as absent.
    """
    lines = sorted(json.dumps([row.path, row.class_name, row.split, _file_digest(Path(root) / row.path)])
                   for row in rows)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _file_digest(path: Path) -> str | None:
    try:
        stat = path.stat()
        key = (str(path.absolute()), stat.st_size, stat.st_mtime_ns)
        if key not in _FILE_DIGESTS:
            with open(path, "rb") as handle:
                _FILE_DIGESTS[key] = hashlib.file_digest(handle, "blake2b").hexdigest()
        return _FILE_DIGESTS[key]
    except OSError:
        return None
