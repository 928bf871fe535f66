"""Labelled microscopy images in, train/val/test tensors out: ``prepare_split`` and ``load_dataset``.

Layout: ``ROOT/<class name>/<image>`` (images may sit in subfolders of a class folder).
``load_dataset`` scans the folder, makes (or reuses) a stratified split recorded in a manifest
CSV, and decodes each image once into float16 tensors kept in memory for the whole run.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from spheroid_hpo.data._check import imbalance_warning
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
from spheroid_hpo.data._split import SPLIT_NAMES, assign_splits
from spheroid_hpo.data._split_spec import DEFAULT_SPLIT, SplitSpec
from spheroid_hpo.data._tensors import decode_images, validate_image_size
from spheroid_hpo.defaults import IMAGE_SIZE
from spheroid_hpo.errors import InputError
from spheroid_hpo.notices import notice


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
    relaxed: str | None = None  # see SplitPlan

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with every split on ``device`` (images in channels_last memory format)."""
        return dataclasses.replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


@dataclass(frozen=True)
class SplitPlan:
    """A scanned data folder and its split, before any image is decoded.

    ``straddling`` lists the duplicate groups the manifest puts in more than one split:
    none for a manifest made here (unless near-duplicates were let apart, or ``relaxed``),
    and possibly some for a reused one, which is reported and never rewritten. ``relaxed``
    says, in one line, what a new split gave up because near-duplicate groups left no
    stratified split; None when nothing was.
    """

    folder: DataFolder
    rows: tuple[ManifestRow, ...]
    manifest_path: Path
    fingerprint: str
    duplicates: Duplicates = Duplicates()
    # Digest of the listed files' bytes (content_digest): what the fingerprint's sizes cannot tell.
    content: str = ""
    straddling: tuple[dict, ...] = ()
    relaxed: str | None = None


def prepare_split(
    data_dir: str | os.PathLike,
    split: SplitSpec = DEFAULT_SPLIT,
    *,
    class_names: Sequence[str] | None = None,
) -> SplitPlan:
    """Scan ``data_dir`` and read its split from ``split.manifest``, or make and write one.

    The manifest defaults to ``data_dir/splits.csv``. When it exists it is reused, so every
    run sees the same split; the other settings then do not matter. Otherwise a stratified
    split is made (group-aware with ``split.group_by`` or ``split.groups_csv``) and written
    there. Exact duplicates and the user's groups always share a split. Near-duplicates do too
    under ``near_duplicates = "together"``, unless that leaves no stratified split: then they
    are let apart, one line says so (``SplitPlan.relaxed``), and the split is made anyway.
    The fingerprint covers the split and every file's size: it tells whether another
    machine's folder holds the same data.
    """
    root = Path(data_dir)
    folder = scan_folder(root, class_names=class_names)
    manifest = Path(split.manifest) if split.manifest is not None else root / DEFAULT_MANIFEST_NAME
    duplicates = find_duplicates(folder.root, [file.path for file in folder.files])
    reused = manifest.exists()
    relaxed = None
    if reused:
        rows = _reuse_manifest(manifest, folder, subset=class_names is not None)
        if split.grouped and rows[0].group is None:
            notice(f"split manifest {manifest} was made without groups, and it is reused as it is; "
                   f"delete it to split by group")
    else:
        if split.near_duplicates == "apart" and duplicates.near:
            notice(f"{len(duplicates.near)} group(s) of near-duplicate images may be split across train, "
                   f"val and test (near_duplicates = \"apart\"): test scores may be inflated")
        rows, relaxed = _new_manifest(manifest, folder, split, duplicates)
        # After the split is made: a folder that cannot be split gets its one error line alone.
        imbalance = imbalance_warning(Counter(folder.class_names[file.label] for file in folder.files))
        if imbalance:
            notice(imbalance)
    crossing = straddling(duplicates.groups(near=True), {row.path: row.split for row in rows})
    if crossing and reused:
        first = ", ".join(f"{path} ({name})" for path, name in crossing[0]["files"].items())
        notice(
            f"split manifest {manifest} puts {len(crossing)} group(s) of duplicate images in more "
            f"than one split (first: {first}), so validation and test scores may be inflated; it "
            f"is used as it is: delete it to re-split with duplicates kept together"
        )
    return SplitPlan(
        folder=folder, rows=tuple(rows), manifest_path=manifest, fingerprint=manifest_fingerprint(rows, root=root),
        duplicates=duplicates, content=content_digest(rows, root=root), straddling=tuple(crossing), relaxed=relaxed,
    )


def load_dataset(
    data_dir: str | os.PathLike,
    *,
    image_size: int = IMAGE_SIZE,
    split: SplitSpec = DEFAULT_SPLIT,
    manifest_path: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    splits: Sequence[str] = SPLIT_NAMES,
    progress: bool = False,
) -> Dataset:
    """Split ``data_dir`` (see ``prepare_split``) and decode the requested ``splits`` into memory.

    ``manifest_path`` is short for ``split`` with that manifest (a recorded split is read
    this way). Unreadable images are skipped with one line each and listed in
    ``Dataset.problems``; splits not in ``splits`` come back empty.
    """
    validate_image_size(image_size)
    wanted = _validate_split_names(splits)
    if manifest_path is not None:
        split = dataclasses.replace(split, manifest=str(manifest_path))
    plan = prepare_split(data_dir, split, class_names=class_names)
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
        relaxed=plan.relaxed,
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
    manifest: Path, folder: DataFolder, split: SplitSpec, duplicates: Duplicates
) -> tuple[list[ManifestRow], str | None]:
    """Make and write a new split; returns its rows and what was relaxed to make it (or None)."""
    groups = None
    if split.group_by is not None:
        groups = groups_from_regex(folder.files, split.group_by)
    elif split.groups_csv is not None:
        groups = groups_from_csv(folder.files, split.groups_csv)

    def assign(near: bool) -> list[str]:
        return assign_splits(folder.files, fractions=split.fractions, seed=split.seed, groups=groups,
                             together=duplicates.groups(near=near))

    relaxed = None
    try:
        assigned = assign(near=split.near_duplicates == "together")
    except InputError as error:
        if split.near_duplicates != "together" or not duplicates.near:
            raise
        # Exact duplicates and the user's groups are hard constraints: when they alone leave no
        # split, the error they give is the one the user can act on.
        assigned = assign(near=False)
        largest = max(duplicates.near, key=len)
        kept = "exact duplicates and your groups" if groups is not None else "exact duplicates"
        relaxed = (
            f"near-duplicate groups leave no stratified split ({_reason(error)}), so only {kept} are "
            f"kept together and {len(duplicates.near)} near-duplicate group(s) may straddle splits; the "
            f"largest has {len(largest)} files (first: {largest[0]}); check-data lists them"
        )
        notice(relaxed)
    try:
        return write_manifest(manifest, folder.files, folder.class_names, assigned, groups), relaxed
    except OSError as error:
        raise InputError(
            f"cannot write the split manifest {manifest} ({error.strerror or error}); pass "
            f"--split-manifest PATH to write it somewhere writable"
        ) from error


def _reason(error: InputError) -> str:
    # The split error's first clause ("class 'background' has 48 image(s) in only 2 group(s)"),
    # without its advice, which is about groups the user did not give.
    return str(error).split(", too few")[0].split("; ")[0]


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
        notice(
            f"{len(unlisted)} image(s) in {folder.root} are not in the split manifest "
            f"{manifest} and are left out (first: {unlisted[0]}); delete the manifest to make "
            f"a new split that includes them"
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
        notice(f"skipping {folder.root / path}: {reason}")

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
