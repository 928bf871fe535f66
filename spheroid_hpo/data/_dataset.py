"""Labelled microscopy images in, train/val/test tensors out: ``prepare_split`` and ``load_dataset``.

Layout: ``ROOT/<class name>/<image>`` (images may sit in subfolders of a class folder).
``load_dataset`` scans the folder, makes (or reuses) a stratified split recorded in a manifest
CSV, and decodes each image once into float16 tensors kept in memory for the whole run.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from spheroid_hpo.data._duplicates import Duplicates, find_duplicates, straddling
from spheroid_hpo.data._folder import DataFolder, scan_folder
from spheroid_hpo.data._groups import groups_from_csv, groups_from_regex
from spheroid_hpo.data._manifest import (
    DEFAULT_MANIFEST_NAME,
    ManifestRow,
    content_digest,
    manifest_fingerprint,
    read_manifest,
    write_manifest,
)
from spheroid_hpo.data._split import SPLIT_NAMES, assign_splits, validate_fractions
from spheroid_hpo.data._tensors import decode_images, validate_image_size
from spheroid_hpo.defaults import IMAGE_SIZE, SPLIT_FRACTIONS
from spheroid_hpo.errors import InputError


# eq=False: the generated __eq__ would compare tensors, whose truth value is ambiguous.
@dataclass(frozen=True, eq=False)
class SplitTensors:
    """The images of one split: float16 (N, 3, S, S) in [0, 1], int64 labels (N,), and the
    image paths relative to the data root, row for row."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: tuple[str, ...]

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.labels) == len(self.paths):
            raise ValueError(
                f"SplitTensors needs one label and path per image, got {len(self.images)} "
                f"images, {len(self.labels)} labels and {len(self.paths)} paths"
            )

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def empty(cls, image_size: int) -> SplitTensors:
        """A split with no images, for splits that were not loaded."""
        return cls(
            images=torch.empty((0, 3, image_size, image_size), dtype=torch.float16),
            labels=torch.empty(0, dtype=torch.int64),
            paths=(),
        )

    def to(self, device: torch.device | str) -> SplitTensors:
        """A copy on ``device``, with the images in channels_last memory format."""
        return SplitTensors(
            images=self.images.to(device, memory_format=torch.channels_last),
            labels=self.labels.to(device),
            paths=self.paths,
        )


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data folder: its classes, the three splits, and where the split came from."""

    root: Path
    class_names: tuple[str, ...]
    image_size: int
    train: SplitTensors
    val: SplitTensors
    test: SplitTensors
    manifest_path: Path
    fingerprint: str
    problems: tuple[tuple[str, str], ...]
    content: str = ""  # see SplitPlan
    # Duplicate groups with files in more than one split of the manifest (see SplitPlan).
    straddling: tuple[dict, ...] = ()
    duplicates: Duplicates = Duplicates()

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with every split on ``device`` (images in channels_last memory format)."""
        return dataclasses.replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


@dataclass(frozen=True)
class SplitPlan:
    """A scanned data folder and its split, before any image is decoded.

    ``straddling`` lists the duplicate groups the manifest puts in more than one split:
    none for a manifest made here (unless near-duplicates were allowed to straddle), and
    possibly some for a reused one, which is reported and never rewritten.
    """

    folder: DataFolder
    rows: tuple[ManifestRow, ...]
    manifest_path: Path
    fingerprint: str
    duplicates: Duplicates = Duplicates()
    # Digest of the listed files' bytes (content_digest): what the fingerprint's sizes cannot tell.
    content: str = ""
    straddling: tuple[dict, ...] = ()


def prepare_split(
    data_dir: str | os.PathLike,
    *,
    seed: int = 0,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    group_by: str | None = None,
    groups_csv: str | os.PathLike | None = None,
    manifest_path: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    near_duplicates_together: bool = True,
) -> SplitPlan:
    """Scan ``data_dir`` and read its split from ``manifest_path``, or make and write one.

    The manifest defaults to ``data_dir/splits.csv``. When it exists it is reused, so
    every run sees the same split; ``seed``, ``fractions`` and the grouping then do not
    matter. Otherwise a stratified split is made (group-aware with ``group_by``, a regex
    whose first capture group names a file's group, or ``groups_csv``) and written there.
    Exact duplicate images always share a split, and so do near-duplicates unless
    ``near_duplicates_together`` is False; a reused manifest that splits a duplicate group
    is warned about. The fingerprint covers the split and every file's size: it tells whether another
    machine's folder holds the same data.
    """
    root = Path(data_dir)
    validate_fractions(fractions)
    if group_by is not None and groups_csv is not None:
        raise InputError(
            f"both a group pattern ({group_by!r}) and a groups file ({groups_csv}) were given; "
            f"pass only one of --group-by and --groups-csv"
        )
    folder = scan_folder(root, class_names=class_names)
    manifest = Path(manifest_path) if manifest_path is not None else root / DEFAULT_MANIFEST_NAME
    duplicates = find_duplicates(folder.root, [file.path for file in folder.files])
    if not near_duplicates_together and duplicates.near:
        warnings.warn(
            f"{len(duplicates.near)} group(s) of near-duplicate images may be split across train, "
            f"val and test (--allow-near-duplicates-across-splits): test scores may be inflated",
            stacklevel=2,
        )
    reused = manifest.exists()
    if reused:
        rows = _reuse_manifest(manifest, folder, subset=class_names is not None)
        if (group_by is not None or groups_csv is not None) and rows[0].group is None:
            warnings.warn(
                f"split manifest {manifest} was made without groups, and it is reused as it "
                f"is; delete it to split by group",
                stacklevel=2,
            )
    else:
        rows = _new_manifest(
            manifest, folder, seed=seed, fractions=fractions, group_by=group_by, groups_csv=groups_csv,
            together=duplicates.groups(near=near_duplicates_together),
        )
    crossing = straddling(duplicates.groups(near=True), {row.path: row.split for row in rows})
    if crossing and reused:
        first = ", ".join(f"{path} ({split})" for path, split in crossing[0]["files"].items())
        warnings.warn(
            f"split manifest {manifest} puts {len(crossing)} group(s) of duplicate images in more "
            f"than one split (first: {first}), so validation and test scores may be inflated; it "
            f"is used as it is: delete it to re-split with duplicates kept together",
            stacklevel=2,
        )
    return SplitPlan(
        folder=folder, rows=tuple(rows), manifest_path=manifest,
        fingerprint=manifest_fingerprint(rows, root=root), duplicates=duplicates, straddling=tuple(crossing),
        content=content_digest(rows, root=root),
    )


def load_dataset(
    data_dir: str | os.PathLike,
    *,
    image_size: int = IMAGE_SIZE,
    seed: int = 0,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    group_by: str | None = None,
    groups_csv: str | os.PathLike | None = None,
    manifest_path: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    splits: Sequence[str] = SPLIT_NAMES,
    progress: bool = False,
    near_duplicates_together: bool = True,
) -> Dataset:
    """Split ``data_dir`` (see ``prepare_split``) and decode the requested ``splits`` into memory.

    Unreadable images are skipped with a warning each and listed in ``Dataset.problems``;
    splits not in ``splits`` come back empty.
    """
    validate_image_size(image_size)
    wanted = _validate_split_names(splits)
    plan = prepare_split(
        data_dir, seed=seed, fractions=fractions, group_by=group_by, groups_csv=groups_csv,
        manifest_path=manifest_path, class_names=class_names, near_duplicates_together=near_duplicates_together,
    )
    tensors, problems = _decode_splits(
        plan.folder, plan.rows, wanted=wanted, image_size=image_size, progress=progress
    )
    return Dataset(
        root=plan.folder.root,
        class_names=plan.folder.class_names,
        image_size=image_size,
        train=tensors["train"],
        val=tensors["val"],
        test=tensors["test"],
        manifest_path=plan.manifest_path,
        fingerprint=plan.fingerprint,
        content=plan.content,
        problems=tuple(problems),
        straddling=plan.straddling,
        duplicates=plan.duplicates,
    )


def _validate_split_names(splits: Sequence[str]) -> tuple[str, ...]:
    # A lone string is one split name, not a sequence of letters; duplicates are dropped.
    wanted = tuple(dict.fromkeys((splits,) if isinstance(splits, str) else splits))
    unknown = [name for name in wanted if name not in SPLIT_NAMES]
    if unknown or not wanted:
        raise InputError(
            f"splits {list(wanted)} must be one or more of {', '.join(SPLIT_NAMES)}; "
            f"pass e.g. ('train', 'val')"
        )
    return wanted


def _new_manifest(
    manifest: Path,
    folder: DataFolder,
    *,
    seed: int,
    fractions: Sequence[float],
    group_by: str | None,
    groups_csv: str | os.PathLike | None,
    together: Sequence[Sequence[str]] = (),
) -> list[ManifestRow]:
    groups = None
    if group_by is not None:
        groups = groups_from_regex(folder.files, group_by)
    elif groups_csv is not None:
        groups = groups_from_csv(folder.files, groups_csv)
    assigned = assign_splits(folder.files, fractions=fractions, seed=seed, groups=groups, together=together)
    try:
        return write_manifest(manifest, folder.files, folder.class_names, assigned, groups)
    except OSError as error:
        raise InputError(
            f"cannot write the split manifest {manifest} ({error.strerror or error}); pass "
            f"--split-manifest PATH to write it somewhere writable"
        ) from error


def _reuse_manifest(manifest: Path, folder: DataFolder, *, subset: bool) -> list[ManifestRow]:
    """Rows of an existing manifest, checked against the files on disk."""
    rows = read_manifest(manifest)
    if subset:
        # An explicit class list selects classes; rows of the other classes are not stale.
        rows = [row for row in rows if row.class_name in folder.class_names]
    fix = f"delete {manifest} to make a new split, or pass another --split-manifest path"
    class_on_disk = {file.path: folder.class_names[file.label] for file in folder.files}
    for row in rows:
        found = class_on_disk.get(row.path)
        if found is None:
            where = folder.root / row.path
            state = "no longer exists" if not where.exists() else "is not an image of a class folder"
            raise InputError(f"split manifest {manifest} lists {row.path}, but {where} {state}; {fix}")
        if found != row.class_name:
            raise InputError(
                f"split manifest {manifest} lists {row.path} as class '{row.class_name}', but "
                f"it is now in class '{found}'; {fix}"
            )

    listed_classes = {row.class_name for row in rows}
    for name in folder.class_names:
        if name not in listed_classes:
            raise InputError(f"split manifest {manifest} has no images of class '{name}'; {fix}")

    listed = {row.path for row in rows}
    unlisted = [path for path in class_on_disk if path not in listed]
    if unlisted:
        warnings.warn(
            f"{len(unlisted)} image(s) in {folder.root} are not in the split manifest "
            f"{manifest} and are left out (first: {unlisted[0]}); delete the manifest to make "
            f"a new split that includes them",
            stacklevel=3,
        )
    return rows


def _decode_splits(
    folder: DataFolder,
    rows: Sequence[ManifestRow],
    *,
    wanted: Sequence[str],
    image_size: int,
    progress: bool,
) -> tuple[dict[str, SplitTensors], list[tuple[str, str]]]:
    """Decode the wanted splits in one pass; unreadable images are warned about and left out."""
    rows_of = {name: [row for row in rows if row.split == name] for name in SPLIT_NAMES}
    paths = [row.path for name in wanted for row in rows_of[name]]
    images, problems = decode_images(folder.root, paths, image_size=image_size, progress=progress)
    for path, reason in problems:
        warnings.warn(f"skipping {folder.root / path}: {reason}", stacklevel=3)

    unreadable = {path for path, _ in problems}
    label_of = {name: label for label, name in enumerate(folder.class_names)}
    tensors = {name: SplitTensors.empty(image_size) for name in SPLIT_NAMES}
    start = 0
    for name in wanted:
        if not rows_of[name]:
            raise InputError(
                f"the split manifest lists no {name} images of the chosen classes; delete it "
                f"to make a new split, or pass another --split-manifest path"
            )
        kept = [row for row in rows_of[name] if row.path not in unreadable]
        if not kept:
            raise InputError(
                f"the {name} split of {folder.root} has no readable images; fix or replace "
                f"the unreadable files listed above, or delete the split manifest to re-split"
            )
        tensors[name] = SplitTensors(
            images=images[start : start + len(kept)],
            labels=torch.tensor([label_of[row.class_name] for row in kept], dtype=torch.int64),
            paths=tuple(row.path for row in kept),
        )
        start += len(kept)
    return tensors, problems
