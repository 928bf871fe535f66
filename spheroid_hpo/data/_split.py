"""Stratified train/val/test splits and cross-validation folds, optionally group-aware.

A split is made once and written to a manifest (``path,class,split[,group]``) so that every
later run, trial and evaluation sees exactly the same images in each split.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from spheroid_hpo.defaults import SPLIT_FRACTIONS
from spheroid_hpo.errors import InputError

if TYPE_CHECKING:
    from spheroid_hpo.data._folder import LabeledFile

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
_GROUP_EXAMPLE = r"'(sph\d+)_'"


# --------------------------------------------------------------------------- splitting


FRACTIONS_RULE = "three positive numbers (train, val, test) summing to 1"


def validate_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """Return ``fractions`` as floats, or raise InputError unless they are FRACTIONS_RULE
    (a bool or a string is not a number here, though Python converts both)."""
    example = "e.g. 0.7,0.15,0.15"
    try:
        if isinstance(fractions, (str, bytes)) or not all(
                isinstance(value, numbers.Real) and not isinstance(value, bool) for value in fractions):
            raise TypeError
        values = tuple(float(value) for value in fractions)
    except (TypeError, ValueError):
        raise InputError(
            f"split fractions {fractions!r} are not numbers; pass three numbers for "
            f"train, val and test, {example}"
        ) from None
    if len(values) != len(SPLIT_NAMES):
        raise InputError(
            f"split fractions {fractions!r} have {len(values)} values; pass "
            f"{len(SPLIT_NAMES)}, one each for train, val and test, {example}"
        )
    if not all(math.isfinite(value) and value > 0 for value in values):
        raise InputError(
            f"split fractions {fractions!r} must all be positive, since every split needs "
            f"images; pass {example}"
        )
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise InputError(
            f"split fractions {fractions!r} sum to {sum(values):g}; they must sum to 1, {example}"
        )
    return values


def assign_splits(
    files: Sequence[LabeledFile],
    *,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    seed: int,
    groups: Sequence[str] | None = None,
    together: Sequence[Sequence[str]] = (),
) -> list[str]:
    """Return one split name (see SPLIT_NAMES) per file, stratified by label.

    Every class gets at least one image in every split. The result depends only on the set of
    files, the fractions and the seed, not on the order of ``files``. With ``groups`` (one
    group name per file, e.g. the spheroid an image patch was cut from) all files of a group
    land in the same split, and the classes are balanced across splits as closely as the
    groups allow. ``together`` lists further sets of paths (duplicate images) that must share
    a split; they join the groups they touch.
    """
    values = validate_fractions(fractions)
    if groups is not None and len(groups) != len(files):
        raise ValueError(f"got {len(groups)} groups for {len(files)} files; pass one group per file")
    known = {file.path for file in files}
    together = [[path for path in group if path in known] for group in together]
    together = [group for group in together if len(group) > 1]
    if groups is None and not together:
        return _stratified_splits(files, values, seed)
    try:
        return _group_splits(files, values, seed, _merged_groups(files, groups, together))
    except InputError as error:
        if not together:
            raise
        raise InputError(
            f"{error}; duplicate images count as one group, so remove the copies that "
            f"check-data lists"
        ) from None


def _merged_groups(
    files: Sequence[LabeledFile], groups: Sequence[str] | None, together: Sequence[Sequence[str]]
) -> list[str]:
    """One group name per file such that files of one group, or of one ``together`` set, share one
    (without ``together``, the groups as they are)."""
    # Union-find over group names; a file without a user group is its own group (its path).
    names = [f"file:{file.path}" if groups is None else f"group:{groups[i]}" for i, file in enumerate(files)]
    parent = {name: name for name in names}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    name_of = dict(zip((file.path for file in files), names))
    for paths in together:
        for path in paths[1:]:
            a, b = sorted((root(name_of[paths[0]]), root(name_of[path])))
            parent[b] = a
    return [root(name) for name in names]


def _rng(seed: int, *keys: int) -> np.random.Generator:
    # Seeding with (seed, key) gives each class its own stream, so adding images to one class
    # does not reshuffle the others.
    return np.random.default_rng([seed % 2**64, *keys])


def _class_name(files: Sequence[LabeledFile], label: int) -> str:
    # Paths are ROOT-relative, so their first component is the class folder.
    path = next(file.path for file in files if file.label == label)
    return PurePosixPath(path).parts[0]


def _split_sizes(count: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of ``count * fractions`` with at least one item per split."""
    exact = [count * fraction for fraction in fractions]
    sizes = [math.floor(value) for value in exact]
    most_short = sorted(range(len(sizes)), key=lambda i: (sizes[i] - exact[i], i))
    for i in most_short[: count - sum(sizes)]:
        sizes[i] += 1
    for i, size in enumerate(sizes):
        if size == 0:
            # count >= len(sizes), so the largest split has at least two items to spare one.
            donor = max(range(len(sizes)), key=lambda j: sizes[j])
            sizes[donor] -= 1
            sizes[i] = 1
    return sizes


def _stratified_splits(
    files: Sequence[LabeledFile], fractions: Sequence[float], seed: int
) -> list[str]:
    by_label: dict[int, list[int]] = defaultdict(list)
    for index, file in enumerate(files):
        by_label[file.label].append(index)
    splits = [""] * len(files)
    for label, indices in sorted(by_label.items()):
        if len(indices) < len(SPLIT_NAMES):
            name = _class_name(files, label)
            raise InputError(
                f"class '{name}' has {len(indices)} image(s), too few to put at least one in "
                f"each of the {len(SPLIT_NAMES)} splits ({', '.join(SPLIT_NAMES)}); add images "
                f"of '{name}' until it has at least {len(SPLIT_NAMES)}, or leave the class out "
                f"by passing the class names without it"
            )
        indices.sort(key=lambda i: files[i].path)
        shuffled = [indices[i] for i in _rng(seed, label).permutation(len(indices))]
        start = 0
        for name, size in zip(SPLIT_NAMES, _split_sizes(len(indices), fractions)):
            for index in shuffled[start : start + size]:
                splits[index] = name
            start += size
    return splits


def _group_splits(
    files: Sequence[LabeledFile], fractions: Sequence[float], seed: int, groups: list[str],
    names: Sequence[str] = SPLIT_NAMES, noun: str = "splits",
) -> list[str]:
    group_names = sorted(set(groups))
    labels = sorted({file.label for file in files})
    group_row = {name: i for i, name in enumerate(group_names)}
    label_col = {label: j for j, label in enumerate(labels)}
    counts = np.zeros((len(group_names), len(labels)), dtype=np.int64)
    for file, group in zip(files, groups):
        counts[group_row[group], label_col[file.label]] += 1

    for j, label in enumerate(labels):
        groups_with_class = int((counts[:, j] > 0).sum())
        if groups_with_class < len(names):
            name = _class_name(files, label)
            raise InputError(
                f"class '{name}' has {int(counts[:, j].sum())} image(s) in only "
                f"{groups_with_class} group(s), too few to put at least one group in each of "
                f"the {len(names)} {noun} ({', '.join(names)}); add images of "
                f"'{name}' from more groups, use a finer group pattern, or split without groups"
            )

    placement = _place_groups(counts, np.asarray(fractions), _rng(seed))
    _ensure_every_class_everywhere(counts, placement, np.asarray(fractions), files, labels, names)
    return [names[placement[group_row[group]]] for group in groups]


def _imbalance(split_counts: np.ndarray, target: np.ndarray, totals: np.ndarray) -> float:
    # Deviation from the target per class, relative to the class size, so that rare classes
    # weigh as much as common ones.
    return float((((split_counts - target) / totals) ** 2).sum())


def _place_groups(counts: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Greedy group-aware stratification: largest groups first (random order among equals),
    each into the split that brings the per-class counts closest to their targets."""
    totals = counts.sum(axis=0)
    target = np.outer(fractions, totals)
    split_counts = np.zeros_like(target)
    placement = np.empty(len(counts), dtype=np.int64)
    order = sorted(rng.permutation(len(counts)), key=lambda g: -counts[g].sum())
    for g in order:
        costs = []
        for s in range(len(fractions)):
            split_counts[s] += counts[g]
            costs.append(_imbalance(split_counts, target, totals))
            split_counts[s] -= counts[g]
        placement[g] = int(np.argmin(costs))
        split_counts[placement[g]] += counts[g]
    return placement


def _ensure_every_class_everywhere(
    counts: np.ndarray,
    placement: np.ndarray,
    fractions: np.ndarray,
    files: Sequence[LabeledFile],
    labels: list[int],
    names: Sequence[str] = SPLIT_NAMES,
) -> None:
    """Move groups (in place) until every split has every class.

    A group may only leave a split that keeps all of its classes without it, so each move
    fills one gap and opens none; the loop therefore ends after at most splits x classes moves.
    """
    totals = counts.sum(axis=0)
    target = np.outer(fractions, totals)
    num_splits = len(fractions)
    while True:
        split_counts = np.stack([counts[placement == s].sum(axis=0) for s in range(num_splits)])
        gaps = np.argwhere(split_counts == 0)
        if len(gaps) == 0:
            return
        split, col = (int(v) for v in gaps[0])
        best, best_cost = None, math.inf
        for g in np.flatnonzero((counts[:, col] > 0) & (placement != split)):
            source = placement[g]
            if np.any((counts[g] > 0) & (split_counts[source] - counts[g] == 0)):
                continue
            moved = split_counts.copy()
            moved[source] -= counts[g]
            moved[split] += counts[g]
            cost = _imbalance(moved, target, totals)
            if cost < best_cost:
                best, best_cost = g, cost
        if best is None:
            name = _class_name(files, labels[col])
            raise InputError(
                f"cannot place the groups so that the {names[split]} split gets an image "
                f"of class '{name}': its images sit in groups that other splits need; add "
                f"images of '{name}' from more groups, use a finer group pattern, or split "
                f"without groups"
            )
        placement[best] = split


def check_fold_number(folds: int) -> int:
    """``folds`` if it is a number of cross-validation folds (2 or more), before any data is read."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise InputError(f"cross-validation needs at least 2 folds, but got {folds=}; pass e.g. 5")
    return folds


def check_fold_count(labels: Sequence, folds: int) -> None:
    """Refuse ``folds`` when a class of ``labels`` (train + val) has fewer images than folds: every
    fold needs each class. (Refused later, the fold placer listed all K folds: 10 kB for 1000.)"""
    check_fold_number(folds)
    counts = Counter(labels)
    label, smallest = min(counts.items(), key=lambda item: (item[1], str(item[0])), default=(None, 0))
    if folds > smallest:
        raise InputError(f"cv_folds = {folds} is more than the {smallest} train + val image(s) of class {label!r}, "
                         f"and every fold needs each class; lower [data] cv_folds to at most {smallest}")


def assign_folds(
    files: Sequence[LabeledFile],
    *,
    folds: int,
    seed: int,
    groups: Sequence[str | None] | None = None,
    together: Sequence[Sequence[str]] = (),
) -> list[int]:
    """Fold (0 .. folds-1) of each file for cross-validation: stratified by label, every class
    in every fold, each group (``groups``) and each set of duplicates (``together``) in one fold."""
    check_fold_count([file.label for file in files], folds)
    if groups is not None and all(group is None for group in groups):
        groups = None
    if groups is not None:
        # Files without a group keep to themselves.
        groups = [group if group is not None else f"file:{file.path}" for file, group in zip(files, groups)]
    names = tuple(f"fold {i + 1}" for i in range(folds))
    known = {file.path for file in files}
    together = [[p for p in group if p in known] for group in together]
    merged = _merged_groups(files, groups, [group for group in together if len(group) > 1])
    try:
        placed = _group_splits(files, [1 / folds] * folds, seed, merged, names=names, noun="folds")
    except InputError as error:
        raise InputError(f"{error}; or lower [data] cv_folds") from None
    return [names.index(name) for name in placed]


