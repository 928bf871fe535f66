"""Exact and near-duplicate images, found from their decoded pixels.

Exact duplicates have the same decoded pixels (whatever the file format). Near-duplicates are
copies of one image: re-saved as JPEG, a few percent brighter or more contrasted, resized,
shifted or cropped by a pixel or two, converted between 8 and 16 bits. The pair test that
tells a copy from a look-alike lives in ``_likeness``.

A near-duplicate group is a *clique*: every two images in it pass the pair test themselves.
Groups are never joined through an intermediate image (A like B, B like C does not put A with
C), which on 3,419 real cell crops once chained 55% of the folder into one group.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.data._formats import UnreadableImage, read_image
from spheroid_hpo.data._likeness import Signature, copy_pairs, signature


@dataclass(frozen=True)
class Duplicates:
    """Groups of image paths (sorted, each group of two or more): ``exact`` ones with the same
    decoded pixels, and ``near`` ones whose distinct pictures are all copies of one another (every
    two pass the pair test; exact copies of a member come along)."""

    exact: tuple[tuple[str, ...], ...] = ()
    near: tuple[tuple[str, ...], ...] = ()

    def mixed_labels(self, label_of: Mapping[str, str]) -> tuple[tuple[str, ...], ...]:
        """The exact and near groups whose files carry more than one label (``label_of``: path ->
        class name): the same image filed under two classes, most likely a labelling mistake."""
        return tuple(group for group in (*self.exact, *self.near) if len({label_of.get(p) for p in group}) > 1)

    def groups(self, *, near: bool = True) -> tuple[tuple[str, ...], ...]:
        """The groups that must share a split: exact ones, joined with near ones when ``near``."""
        return tuple(_components([*self.exact, *(self.near if near else ())]))

    def to_dict(self) -> dict:
        return {"exact_duplicates": [list(g) for g in self.exact], "near_duplicates": [list(g) for g in self.near]}


def find_duplicates(root: str | os.PathLike, paths: Sequence[str]) -> Duplicates:
    """Exact and near-duplicate groups among ``root / path``; unreadable files are skipped."""
    root = Path(root)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # decoders release the GIL
        signatures = list(pool.map(lambda path: _signature_or_none(root / path), paths))
    known = [(path, sig) for path, sig in zip(paths, signatures, strict=True) if sig is not None]
    return duplicates_of(dict(known))


def duplicates_of(signatures: Mapping[str, Signature]) -> Duplicates:
    """Group already computed signatures (path -> signature)."""
    paths = list(signatures)
    by_digest: dict[str, list[str]] = {}
    for path in paths:
        by_digest.setdefault(signatures[path].digest, []).append(path)
    exact = [tuple(sorted(group)) for group in by_digest.values() if len(group) > 1]

    # One node per distinct picture: exact copies share every pair test, so they join a near
    # group together, and a group of exact copies alone is not a near group.
    nodes = list(by_digest)
    pairs = copy_pairs([signatures[by_digest[digest][0]] for digest in nodes])
    near = [tuple(sorted(path for n in clique for path in by_digest[nodes[n]])) for clique in _cliques(pairs)]
    return Duplicates(exact=tuple(sorted(exact)), near=tuple(sorted(near)))


def straddling(groups: Iterable[Sequence[str]], split_of: Mapping[str, str]) -> list[dict]:
    """The groups whose listed files lie in more than one split, each with its files' splits."""
    found = []
    for group in groups:
        splits = {path: split_of[path] for path in group if path in split_of}
        if len(set(splits.values())) > 1:
            found.append({"files": splits})
    return found


def _signature_or_none(path: Path) -> Signature | None:
    try:
        return signature(read_image(path))
    except (UnreadableImage, OSError):
        return None  # check_data and the loader report unreadable files themselves


def _components(groups: Iterable[Sequence[str]]) -> list[tuple[str, ...]]:
    """Connected components (sorted, two or more members) of the graph the groups link."""
    parent: dict[str, str] = {}

    def root(item: str) -> str:
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for group in groups:
        group = list(group)
        for other in group[1:]:
            parent[root(other)] = root(group[0])
    members: dict[str, list[str]] = {}
    for item in parent:
        members.setdefault(root(item), []).append(item)
    return sorted(tuple(sorted(m)) for m in members.values() if len(m) > 1)


def _cliques(pairs: Sequence[tuple[int, int, float]]) -> list[list[int]]:
    """Disjoint groups in which every two members are a pair, greedily: the member with the most
    pairs left starts a group, then its partners join most alike first if they pair with every
    member already in it; what is left over forms further groups the same way."""
    partners: dict[int, dict[int, float]] = {}
    for i, j, likeness in pairs:
        partners.setdefault(i, {})[j] = likeness
        partners.setdefault(j, {})[i] = likeness
    left = set(partners)
    groups = []
    while True:
        degree = {n: len(partners[n].keys() & left) for n in left}
        if not degree or max(degree.values()) == 0:
            return groups
        seed = max(sorted(degree), key=lambda n: degree[n])
        group = [seed]
        for other in sorted(partners[seed].keys() & left, key=lambda n: (-partners[seed][n], n)):
            if all(other in partners[member] for member in group):
                group.append(other)
        groups.append(group)
        left -= set(group)
