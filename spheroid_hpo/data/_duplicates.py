"""Exact and near-duplicate images, found from their decoded pixels.

Exact duplicates have the same decoded pixels (whatever the file format). Near-duplicates
are images whose grey thumbnails agree once brightness and contrast are removed: a copy
re-saved as JPEG, made a few percent brighter or resized. Two correlations must both pass,
so that images which merely look alike are not grouped:

- coarse: the 16x16 thumbnails (area-averaged, zero mean, unit norm) correlate at least
  ``MIN_COARSE``: the layout agrees;
- detail: the 32x32 thumbnails minus their own 8x8 block means correlate at least
  ``MIN_DETAIL``: the fine texture (cells, camera noise) agrees too.

Look-alike spheroids, or background patches under the same illumination, share their layout
but not their detail; two noise textures share neither. Measured (tests/test_duplicates.py):
distinct demo images and look-alike patches reach at most 0.96 coarse and 0.4 detail, copies
re-saved as JPEG q90 and 3% brighter at least 0.99 and 0.8 (64 px). Thumbnails with almost
no contrast (a constant image) carry no pattern and take part in the exact test only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spheroid_hpo.data._formats import UnreadableImage, read_image

MIN_COARSE = 0.9
MIN_DETAIL = 0.6
# A thumbnail whose grey levels vary less than this (in [0, 1] units) is featureless.
_MIN_CONTRAST = 2e-3
_BLOCK = 1024  # rows of the correlation matrix computed at a time, to bound memory


@dataclass(frozen=True)
class Duplicates:
    """Groups of image paths (sorted, each group of two or more): ``exact`` ones with the same
    decoded pixels, and ``near`` ones linked by near-duplicate pairs that are not all exact."""

    exact: tuple[tuple[str, ...], ...] = ()
    near: tuple[tuple[str, ...], ...] = ()

    def groups(self, *, near: bool = True) -> tuple[tuple[str, ...], ...]:
        """The groups that must share a split: exact ones, joined with near ones when ``near``."""
        return tuple(_components([*self.exact, *(self.near if near else ())]))

    def to_dict(self) -> dict:
        return {"exact_duplicates": [list(g) for g in self.exact], "near_duplicates": [list(g) for g in self.near]}


@dataclass(frozen=True)
class _Signature:
    digest: str
    coarse: np.ndarray | None  # 256 floats, zero mean, unit norm; None for a featureless image
    detail: np.ndarray | None  # 1024 floats, zero mean, unit norm


def find_duplicates(root: str | os.PathLike, paths: Sequence[str]) -> Duplicates:
    """Exact and near-duplicate groups among ``root / path``; unreadable files are skipped."""
    root = Path(root)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # decoders release the GIL
        signatures = list(pool.map(lambda path: _signature_or_none(root / path), paths))
    known = [(path, sig) for path, sig in zip(paths, signatures, strict=True) if sig is not None]
    return duplicates_of(dict(known))


def duplicates_of(signatures: Mapping[str, _Signature]) -> Duplicates:
    """Group already computed signatures (path -> signature)."""
    paths = list(signatures)
    by_digest: dict[str, list[str]] = {}
    for path in paths:
        by_digest.setdefault(signatures[path].digest, []).append(path)
    exact = [tuple(sorted(group)) for group in by_digest.values() if len(group) > 1]

    patterned = [path for path in paths if signatures[path].coarse is not None]
    pairs = []
    if len(patterned) > 1:
        coarse = np.stack([signatures[p].coarse for p in patterned]).astype(np.float32)
        detail = np.stack([signatures[p].detail for p in patterned]).astype(np.float32)
        for start in range(0, len(patterned), _BLOCK):
            stop = start + _BLOCK
            close = (coarse[start:stop] @ coarse.T >= MIN_COARSE) & (detail[start:stop] @ detail.T >= MIN_DETAIL)
            rows, cols = np.nonzero(close)
            for i, j in zip(rows + start, cols):
                a, b = patterned[i], patterned[j]
                if i < j and signatures[a].digest != signatures[b].digest:
                    pairs.append((a, b))
    near = [group for group in _components([*exact, *pairs]) if _has_pair_in(group, pairs)]
    return Duplicates(exact=tuple(sorted(exact)), near=tuple(sorted(near)))


def straddling(groups: Iterable[Sequence[str]], split_of: Mapping[str, str]) -> list[dict]:
    """The groups whose listed files lie in more than one split, each with its files' splits."""
    found = []
    for group in groups:
        splits = {path: split_of[path] for path in group if path in split_of}
        if len(set(splits.values())) > 1:
            found.append({"files": splits})
    return found


def signature(pixels: np.ndarray) -> _Signature:
    """The exact digest and the two normalised thumbnails of an (H, W, 3) float image in [0, 1]."""
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    digest = hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()
    grey = Image.fromarray(pixels.mean(axis=2))
    # BOX (area) filtering averages whole pixels, so a resized copy gives the same thumbnail.
    coarse = np.asarray(grey.resize((16, 16), Image.Resampling.BOX), dtype=np.float64)
    fine = np.asarray(grey.resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    if fine.std() < _MIN_CONTRAST:
        return _Signature(digest, None, None)
    detail = fine - np.kron(fine.reshape(8, 4, 8, 4).mean(axis=(1, 3)), np.ones((4, 4)))
    return _Signature(digest, _unit(coarse), _unit(detail))


def _signature_or_none(path: Path) -> _Signature | None:
    try:
        return signature(read_image(path))
    except (UnreadableImage, OSError):
        return None  # check_data and the loader report unreadable files themselves


def _unit(values: np.ndarray) -> np.ndarray:
    # Zero mean and unit norm: a dot product is then the Pearson correlation, blind to
    # brightness and contrast.
    centred = (values - values.mean()).ravel()
    return centred / max(float(np.linalg.norm(centred)), 1e-12)


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


def _has_pair_in(group: Sequence[str], pairs: Sequence[tuple[str, str]]) -> bool:
    inside = set(group)
    return any(a in inside for a, _ in pairs)
