"""The near-duplicate pair test: is one image a copy of another (re-saved, re-exposed, resized,
shifted or cropped a little), or only a look-alike?

Each image is reduced once to a *working image*: grey, at most ``WORK_SIDE`` pixels a side
(smaller images keep their own pixels, so a 1-2 px shift of a 40 px crop stays a whole-pixel
shift), and band-passed: a Gaussian of ``BAND[0]`` px minus one of ``BAND[1]`` px. The
band-pass removes illumination (vignetting, uneven field) and keeps cell-scale detail and
texture; plain fields are then left with uncorrelated camera noise.

Two steps, so that the careful comparison runs on few pairs:

1. *Candidates*: for each image, the ``CANDIDATES`` most alike others by three cheap
   signatures compared all-pairs: a 16x16 thumbnail (searched over +-1 thumbnail pixel), and
   two 24x24 windows centred on the image's centre of detail (so a shift or crop moves them
   with the content), one spanning 80% of the frame (blind to resizing), one a fixed
   24 working pixels (blind to cropping).
2. *Pair test*: the working images are registered (the larger resized to the smaller, or the
   smaller slid inside the larger when they differ by a crop) and their best correlation over
   shifts of up to ``SHIFT`` px is the pair's *likeness*. A pair is a copy when its likeness
   is at least ``MIN_LIKENESS`` and its distance (1 - likeness) is at most ``RATIO`` times the
   distance of either image to its typical look-alike (the median likeness of its candidates):
   the ratio test of feature matching. Real crops of one cell type are alike to 0.9 at
   cell scale (ifc_cellcycle), while generated images are alike to 0.3, so no fixed threshold
   tells copies from look-alikes on both; a copy is instead much closer than the look-alikes.
   A likeness of at least ``SURE_LIKENESS`` is a copy whatever the look-alikes (so a folder
   holding many copies of one image still finds them, and so does a folder of fewer than
   five images, which has no look-alikes to compare with). Measured in
   benchmarks/duplicates.py: on ifc_cellcycle, copies reach 0.96-1.0 and the closest distinct
   cells 0.91 against a typical 0.8; on demo images copies reach 0.78 (JPEG q75 at 64 px) and
   distinct images at most 0.47.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from scipy import ndimage

WORK_SIDE = 64
BAND = (0.7, 3.0)  # Gaussian sigmas (working px) of the band-pass
SHIFT = 2  # working px searched each way when registering a pair
CANDIDATES = 6  # per image and per signature
MIN_LIKENESS = 0.6
SURE_LIKENESS = 0.97
RATIO = 0.35
_FEATURELESS = 2e-3  # band-passed spread (grey levels in [0, 1]) below which an image is blank
_MIN_LOOK_ALIKES = 4  # candidates an image needs for the ratio test
_CROP_SLACK = 2 * SHIFT + 2  # a smaller image this many px narrower may be a crop of the larger
_COARSE, _ALIGNED = 16, 24
_BLOCK = 1024  # rows of a similarity matrix computed at a time, to bound memory
_PAIR_CHUNK = 4096


@dataclass(frozen=True)
class Signature:
    """What the duplicate finder keeps of one image: ``digest`` (exact pixels) and, unless the
    image is featureless, its band-passed working image and three candidate signatures."""

    digest: str
    work: np.ndarray | None = None  # float32 working image, band-passed
    coarse: np.ndarray | None = None  # (9, 196): the 14x14 inner windows at each +-1 px shift
    frame: np.ndarray | None = None  # (576,) window over 80% of the frame, at the centre of detail
    fixed: np.ndarray | None = None  # (576,) window of a fixed size, at the centre of detail

    @property
    def patterned(self) -> bool:
        return self.work is not None


def signature(pixels: np.ndarray) -> Signature:
    """The signature of an (H, W, 3) float image in [0, 1]."""
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    digest = hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()
    grey = pixels.mean(axis=2)
    height, width = grey.shape
    scale = min(1.0, WORK_SIDE / max(height, width))
    image = Image.fromarray(grey)
    if scale < 1:  # BOX (area) filtering: a resized copy gives the same working image
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = np.asarray(image.resize(size, Image.Resampling.BOX), dtype=np.float32)
    work = _band_pass(grey, BAND)
    if min(work.shape) < 2 * SHIFT + 8 or work.std() < _FEATURELESS:
        return Signature(digest)
    thumb = np.asarray(image.resize((_COARSE, _COARSE), Image.Resampling.BOX), dtype=np.float32)
    coarse = _band_pass(thumb, (1.0, 4.0))
    coarse = _unit(sliding_window_view(coarse, (_COARSE - 2, _COARSE - 2)).reshape(9, -1))
    centre_y, centre_x = _centre_of_detail(work)
    frame = _window(work, centre_y, centre_x, 0.4 * min(work.shape))
    fixed = _window(work, centre_y, centre_x, min(12.0, 0.4 * min(work.shape)))
    return Signature(digest, work, coarse, frame, fixed)


def copy_pairs(signatures: list[Signature]) -> list[tuple[int, int, float]]:
    """The pairs (i < j, likeness) of patterned signatures that pass the pair test."""
    candidates = candidate_pairs(signatures)
    if not candidates:
        return []
    likeness = pair_likeness(signatures, candidates)
    # An image compared with too few others has no typical look-alike: only a sure likeness counts.
    typical = np.ones(len(signatures))
    per_image: dict[int, list[float]] = {}
    for (i, j), value in zip(candidates, likeness, strict=True):
        per_image.setdefault(i, []).append(value)
        per_image.setdefault(j, []).append(value)
    for i, values in per_image.items():
        if len(values) >= _MIN_LOOK_ALIKES:
            typical[i] = float(np.median(values))
    found = []
    for (i, j), value in zip(candidates, likeness, strict=True):
        distance, look_alike = 1 - value, 1 - max(typical[i], typical[j])
        if value >= SURE_LIKENESS or (value >= MIN_LIKENESS and distance <= RATIO * look_alike):
            found.append((i, j, float(value)))
    return found


def candidate_pairs(signatures: list[Signature]) -> list[tuple[int, int]]:
    """Each patterned image's most alike others by each signature, as sorted pairs (i < j)."""
    index = [i for i, sig in enumerate(signatures) if sig.patterned]
    if len(index) < 2:
        return []
    k = min(CANDIDATES, len(index) - 1)
    coarse = np.stack([signatures[i].coarse for i in index])
    found: set[tuple[int, int]] = set()
    searches = [
        (coarse[:, 4], coarse),  # the centre window against every shifted one
        (np.stack([signatures[i].frame for i in index]), None),
        (np.stack([signatures[i].fixed for i in index]), None),
    ]
    for queries, shifted in searches:
        for start in range(0, len(index), _BLOCK):
            block = queries[start : start + _BLOCK]
            if shifted is None:
                scores = block @ queries.T
            else:
                scores = block @ shifted[:, 0].T
                for s in range(1, shifted.shape[1]):
                    np.maximum(scores, block @ shifted[:, s].T, out=scores)
            rows = np.arange(len(block))
            scores[rows, rows + start] = -np.inf
            best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            for row, cols in enumerate(best):
                a = index[start + row]
                found.update((min(a, index[c]), max(a, index[c])) for c in cols)
    return sorted(found)


def pair_likeness(signatures: list[Signature], pairs: list[tuple[int, int]]) -> np.ndarray:
    """The likeness of each pair: best correlation of the registered working images."""
    likeness = np.empty(len(pairs), dtype=np.float64)
    by_shape: dict[tuple, list[int]] = {}
    for n, (i, j) in enumerate(pairs):
        a, b = signatures[i].work, signatures[j].work
        if a.shape == b.shape:
            by_shape.setdefault(a.shape, []).append(n)
        else:
            likeness[n] = _registered(a, b)
    for members in by_shape.values():
        # Each image takes part in many pairs: prepare it once.
        images = sorted({i for n in members for i in pairs[n]})
        row = {image: r for r, image in enumerate(images)}
        prepared = _Shiftable(np.stack([signatures[i].work for i in images]))
        for start in range(0, len(members), _PAIR_CHUNK):
            chunk = members[start : start + _PAIR_CHUNK]
            first = np.array([row[pairs[n][0]] for n in chunk])
            second = np.array([row[pairs[n][1]] for n in chunk])
            likeness[chunk] = prepared.best_shift(first, second)
    return likeness


def _registered(a: np.ndarray, b: np.ndarray) -> float:
    """Likeness of two working images of different shapes: resized, or one cropped from the other."""
    if a.size > b.size:
        a, b = b, a
    best = _Shiftable(np.stack([a, _resized(b, a.shape)])).best_shift(np.array([0]), np.array([1]))[0]
    extra_h, extra_w = b.shape[0] - a.shape[0], b.shape[1] - a.shape[1]
    if 0 <= extra_h <= _CROP_SLACK and 0 <= extra_w <= _CROP_SLACK:
        windows = _unit(sliding_window_view(b, a.shape).reshape(-1, a.size))
        best = max(best, float((windows @ _unit(a.ravel())).max()))
    return float(best)


class _Shiftable:
    """A stack of equal-shape working images, ready to correlate each one's centre (trimmed by
    SHIFT px) with the same-size windows of another, shifted up to SHIFT px."""

    def __init__(self, stack: np.ndarray) -> None:
        n, height, width = stack.shape
        self.h, self.w = height - 2 * SHIFT, width - 2 * SHIFT
        self.stack = stack
        centre = stack[:, SHIFT : SHIFT + self.h, SHIFT : SHIFT + self.w].reshape(n, -1)
        self.centre = _unit(centre).reshape(n, self.h, self.w)
        # The centre has zero mean, so its product with a window needs no window mean; each
        # window's spread comes from summed-area tables instead of normalising every window.
        self.sums = _summed_area(stack.astype(np.float64))
        self.squares = _summed_area(stack.astype(np.float64) ** 2)

    def best_shift(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """The likeness of images ``first[k]`` and ``second[k]`` (indices into the stack)."""
        h, w = self.h, self.w
        centre, stack, sums, squares = self.centre[first], self.stack[second], self.sums[second], self.squares[second]
        best = np.full(len(first), -1.0)
        for dy in range(2 * SHIFT + 1):
            for dx in range(2 * SHIFT + 1):
                total, total_sq = _box(sums, dy, dx, h, w), _box(squares, dy, dx, h, w)
                spread = np.sqrt(np.maximum(total_sq - total**2 / (h * w), 1e-12))
                product = np.einsum("nij,nij->n", centre, stack[:, dy : dy + h, dx : dx + w])
                np.maximum(best, product / spread, out=best)
        return best


def _summed_area(stack: np.ndarray) -> np.ndarray:
    table = np.zeros((stack.shape[0], stack.shape[1] + 1, stack.shape[2] + 1))
    table[:, 1:, 1:] = stack.cumsum(axis=1).cumsum(axis=2)
    return table


def _box(table: np.ndarray, y: int, x: int, h: int, w: int) -> np.ndarray:
    return table[:, y + h, x + w] - table[:, y, x + w] - table[:, y + h, x] + table[:, y, x]


def _band_pass(grey: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    grey = grey.astype(np.float32)
    low, high = band
    return ndimage.gaussian_filter(grey, low, mode="reflect") - ndimage.gaussian_filter(grey, high, mode="reflect")


def _centre_of_detail(work: np.ndarray) -> tuple[float, float]:
    energy = work.astype(np.float64) ** 2
    total = energy.sum()
    ys, xs = np.indices(work.shape)
    return float((energy * ys).sum() / total), float((energy * xs).sum() / total)


def _window(work: np.ndarray, centre_y: float, centre_x: float, half: float) -> np.ndarray:
    """A band-passed window of `_ALIGNED` x `_ALIGNED` samples spanning 2 * `half` px around the
    centre (bilinear; the border repeats beyond the image)."""
    steps = (np.arange(_ALIGNED) + 0.5) / _ALIGNED * 2 * half - half
    ys, xs = np.meshgrid(centre_y + steps, centre_x + steps, indexing="ij")
    return _unit(ndimage.map_coordinates(work, [ys.ravel(), xs.ravel()], order=1, mode="nearest"))


def _resized(work: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    image = Image.fromarray(work.astype(np.float32))
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def _unit(values: np.ndarray) -> np.ndarray:
    # Zero mean and unit norm along the last axis: a dot product is then the Pearson
    # correlation, blind to brightness and contrast.
    values = values.astype(np.float32)
    centred = values - values.mean(axis=-1, keepdims=True)
    return centred / np.maximum(np.linalg.norm(centred, axis=-1, keepdims=True), 1e-12)
