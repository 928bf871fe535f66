"""Image sets for the near-duplicate tests and benchmark (import as `from image_sets import ...`).

- `write_background_set`: what a lab's "background" class looks like, the hardest case for a
  near-duplicate detector's precision: patches of plain field under smooth vignetting at random
  centres, camera noise and 0-5 debris specks, as PNG, JPEG q85 and 16-bit TIFF, 150-330 px.
  Every patch is drawn independently, so none is a copy of another.
- `COPY_KINDS`: the ways a copy of an image ends up in a data folder (re-saved, re-exposed,
  resized, shifted, cropped, converted between 8 and 16 bits); `plant_copy` writes one, and
  `plant_copies` a copy of a whole folder with copies of some of its images next to them.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

BACKGROUND_CLASSES = ("background", "debris", "empty_well")
_FORMATS = ("png", "jpg", "tif")


def background_patch(rng: np.random.Generator, size: int) -> np.ndarray:
    """One plain-field patch as floats in [0, 1]: vignetting, camera noise, 0-5 debris specks."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # The optical axis may lie outside the patch (a tile cut from a corner of the field of view).
    cy, cx = rng.uniform(-0.5 * size, 1.5 * size, size=2)
    radius = rng.uniform(0.8, 2.0) * size
    field = rng.uniform(0.45, 0.7) * (1 - rng.uniform(0.05, 0.35) * ((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2)
    for y, x in rng.uniform(0, size, size=(rng.integers(0, 6), 2)):
        width = rng.uniform(0.8, 3.0)
        field -= rng.uniform(0.05, 0.2) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * width**2))
    shot = rng.normal(0, 1, field.shape) * np.sqrt(np.clip(field, 0, 1)) * rng.uniform(0.006, 0.02)
    return np.clip(field + shot + rng.normal(0, 0.004, field.shape), 0, 1)


def write_background_set(root: Path, *, count: int = 90, seed: int = 0) -> list[str]:
    """Write `count` independent patches into ROOT/<class>/, cycling the classes and the formats
    (PNG 8-bit, JPEG q85, TIFF 16-bit); return their paths relative to `root`."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = background_patch(rng, int(rng.integers(150, 331)))
        fmt = _FORMATS[i % len(_FORMATS)]
        relative = f"{BACKGROUND_CLASSES[(i // len(_FORMATS)) % len(BACKGROUND_CLASSES)]}/patch{i:03d}.{fmt}"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "tif":
            tifffile.imwrite(path, np.rint(pixels * 65535).astype(np.uint16))
        else:
            Image.fromarray(np.rint(pixels * 255).astype(np.uint8)).save(path, quality=85)
        paths.append(relative)
    return paths


# --------------------------------------------------------------------------- copies


def _to8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    low, high = float(pixels.min()), float(pixels.max())
    return np.rint((pixels - low) / max(high - low, 1) * 255).astype(np.uint8)


def _to16(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.uint16) * 257 if pixels.dtype == np.uint8 else pixels


def _scaled(pixels: np.ndarray, gain: float, offset: float) -> np.ndarray:
    top = np.iinfo(pixels.dtype).max
    return np.clip(np.rint(pixels.astype(np.float64) * gain + offset * top), 0, top).astype(pixels.dtype)


def _contrast(pixels: np.ndarray, factor: float) -> np.ndarray:
    mean = float(pixels.mean()) / np.iinfo(pixels.dtype).max
    return _scaled(pixels, factor, mean * (1 - factor))


def _resized(pixels: np.ndarray, scale: float) -> np.ndarray:
    height, width = pixels.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(pixels.astype(np.float32)).resize(size, Image.Resampling.BICUBIC)
    top = np.iinfo(pixels.dtype).max
    return np.clip(np.rint(np.asarray(resized)), 0, top).astype(pixels.dtype)


def _shifted(pixels: np.ndarray, dy: int, dx: int) -> np.ndarray:
    # The stage moved: the content slides and the edge that comes in repeats the border.
    padded = np.pad(pixels, ((abs(dy), abs(dy)), (abs(dx), abs(dx))), mode="edge")
    h, w = pixels.shape
    return padded[abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]


# name -> (function of a 2-D uint8/uint16 array -> (array, format)); the format "same" keeps the
# original's (PNG for 8-bit, TIFF for 16-bit).
COPY_KINDS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, str]]] = {
    "jpeg q75": lambda p: (_to8(p), "jpg75"),
    "jpeg q85": lambda p: (_to8(p), "jpg85"),
    "jpeg q95": lambda p: (_to8(p), "jpg95"),
    "brightness +5%": lambda p: (_scaled(p, 1.05, 0), "same"),
    "brightness -5%": lambda p: (_scaled(p, 0.95, 0), "same"),
    "contrast +5%": lambda p: (_contrast(p, 1.05), "same"),
    "contrast -5%": lambda p: (_contrast(p, 0.95), "same"),
    "resized 3/4": lambda p: (_resized(p, 0.75), "same"),
    "resized 1.5x": lambda p: (_resized(p, 1.5), "same"),
    "shifted 1 px": lambda p: (_shifted(p, 1, -1), "same"),
    "shifted 2 px": lambda p: (_shifted(p, -2, 2), "same"),
    "cropped 1 px": lambda p: (p[1:-1, 1:-1], "same"),
    "cropped 2 px": lambda p: (p[2:, :-2], "same"),
    "8 <-> 16 bit": lambda p: (_to16(p) if p.dtype == np.uint8 else _to8(p), "flip"),
}


def read_grey(path: Path) -> np.ndarray:
    """A 2-D uint8 or uint16 array from a grey PNG or TIFF (the first channel of RGB)."""
    pixels = tifffile.imread(path) if path.suffix.lower() in (".tif", ".tiff") else np.asarray(Image.open(path))
    return pixels if pixels.ndim == 2 else pixels[..., 0]


def plant_copy(source: Path, kind: str, target_stem: Path) -> Path:
    """Write a copy of `source` made by `kind` (a key of `COPY_KINDS`) next to `target_stem`,
    with the suffix its format needs; return its path."""
    pixels, fmt = COPY_KINDS[kind](read_grey(source))
    if fmt == "flip":
        fmt = "png" if pixels.dtype == np.uint8 else "tif"
    elif fmt == "same":
        fmt = "tif" if pixels.dtype == np.uint16 else "png"
    if fmt.startswith("jpg"):
        path = target_stem.with_suffix(".jpg")
        Image.fromarray(pixels).save(path, quality=int(fmt[3:]))
    elif fmt == "tif":
        path = target_stem.with_suffix(".tif")
        tifffile.imwrite(path, pixels)
    else:
        path = target_stem.with_suffix(".png")
        Image.fromarray(pixels).save(path)
    return path


def image_paths(root: Path) -> list[str]:
    """The images under `root`, relative and sorted."""
    suffixes = (".png", ".jpg", ".tif")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in suffixes)


def plant_copies(
    source: Path, target: Path, *, copies: int, seed: int, kinds: Sequence[str] = tuple(COPY_KINDS),
) -> list[tuple[str, str, str]]:
    """Copy the folder `source` to `target`, then plant `copies` copies of each kind, each of
    another randomly chosen original and next to it; return (kind, original, copy) paths."""
    shutil.copytree(source, target)
    chosen = random.Random(seed).sample(image_paths(target), copies * len(kinds))
    planted = []
    for k, kind in enumerate(kinds):
        for n, original in enumerate(chosen[k * copies : (k + 1) * copies]):
            made = plant_copy(target / original, kind, (target / original).parent / f"copy{k:02d}_{n:03d}")
            planted.append((kind, original, made.relative_to(target).as_posix()))
    return planted
