"""A synthetic brightfield data set in the paper's four classes, for demos and tests.

Each class is defined by what its cells look like, never by how bright or
contrasty the image is: every image is normalised and then given a random
brightness, contrast and camera noise drawn from the same ranges for all
classes, so a model has to learn cell structure. Geometry is relative to the
image side, so a 32 px image is a coarser view of the same scene as a 64 px one.

  0_background    medium only: uneven illumination, grain, a few debris specks
  1_dead_cells    scattered clusters of small, irregular, dark fragments, no halo
  2_live_outside  scattered round cells, dark rim and bright halo (phase-like)
  3_live_inside   densely packed cells with boundaries: the spheroid's interior
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from spheroid_hpo.atomic_write import replacing_folder, require_writable
from spheroid_hpo.defaults import DEMO_SETTINGS
from spheroid_hpo.errors import InputError
from spheroid_hpo.toml_table import REQUIRED, TomlTable

CLASS_NAMES = ("0_background", "1_dead_cells", "2_live_outside", "3_live_inside")

_CLASS_WEIGHTS = (1.5, 0.6, 0.8, 1.1)  # mean 1, so per_class stays the mean count
MIN_PER_CLASS = 3  # one image for each of train, val and test
MIN_SIZE = 16
# Settings can come from a file someone sent (a study file, a best.toml): bound what they may write.
MAX_PER_CLASS = 5000
MAX_SIZE = 1024
# The one table of the settings' bounds (lowest, highest), for the generator and every file that names them.
DEMO_LIMITS: dict[str, tuple[int, int]] = {
    "per_class": (MIN_PER_CLASS, MAX_PER_CLASS), "size": (MIN_SIZE, MAX_SIZE), "seed": (0, 2**32 - 1),
}
_MARKER = ".demo-data.json"  # hidden, so data scanners skip it
_GENERATOR_VERSION = 1  # bump when the images change, so stale folders are not reused


def write_demo_data(
    out_dir: str | os.PathLike[str], *, per_class: int = DEMO_SETTINGS["per_class"],
    size: int = DEMO_SETTINGS["size"], seed: int = DEMO_SETTINGS["seed"],
) -> dict[str, int]:
    """Write OUT_DIR/<class name>/<name>.png (8-bit grey) and return the image count per class.

    Classes are imbalanced around a mean of `per_class` images (weights
    1.5/0.6/0.8/1.1, at least 3 each). The same arguments write the same bytes.
    `out_dir` must be missing or empty, so no existing file is ever replaced.
    The images are written to a hidden sibling folder that is then renamed, so
    an interrupted run leaves no half-written data set behind.
    """
    out_dir = Path(out_dir)
    settings = _validated_settings(per_class=per_class, size=size, seed=seed)
    _check_free(out_dir)
    require_writable(out_dir, option="the demo data")
    try:
        with replacing_folder(out_dir, replace=False) as staging:
            counts = _write_images(staging, **settings)
            marker = {**settings, "generator_version": _GENERATOR_VERSION, "counts": counts}
            (staging / _MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    except OSError:
        _check_free(out_dir)  # another writer filled it meanwhile: say so
        raise
    return counts


def demo_data_dir(runs_dir: str | os.PathLike[str], *, per_class: int = DEMO_SETTINGS["per_class"],
                  size: int = DEMO_SETTINGS["size"], seed: int = DEMO_SETTINGS["seed"]) -> Path:
    """Where the demo data set with these settings lives under ``runs_dir``: one folder per setting."""
    return Path(runs_dir) / f"demo-data-{per_class}x{size}px-seed{seed}"


def ensure_demo_data(out_dir: str | os.PathLike[str], *, per_class: int = DEMO_SETTINGS["per_class"],
                     size: int = DEMO_SETTINGS["size"], seed: int = DEMO_SETTINGS["seed"]) -> Path:
    """Return `out_dir` holding the demo data for these settings, writing it only if absent.

    Reusing the folder keeps a split manifest written into it valid, and several
    workers may call this at once: one writes, the others reuse. A folder
    holding other files, or demo data made with other settings, raises
    `InputError` rather than being overwritten.
    """
    out_dir = Path(out_dir)
    wanted = {**_validated_settings(per_class=per_class, size=size, seed=seed), "generator_version": _GENERATOR_VERSION}
    marker = out_dir / _MARKER
    if not marker.is_file():
        try:
            write_demo_data(out_dir, per_class=per_class, size=size, seed=seed)
            return out_dir
        except InputError:
            if not marker.is_file():  # not a concurrent writer that got there first
                raise
    found = _read_marker(marker)
    if {key: found.get(key) for key in wanted} != wanted:
        raise InputError(
            f"demo data folder {out_dir} was written with other settings ({_settings_text(found)}, "
            f"wanted {_settings_text(wanted)}); delete the folder or pick another one"
        )
    return out_dir


def class_counts(per_class: int) -> dict[str, int]:
    """Images per class for a mean of `per_class`: imbalanced, at least 3 each."""
    return {
        name: max(MIN_PER_CLASS, int(per_class * weight + 0.5))
        for name, weight in zip(CLASS_NAMES, _CLASS_WEIGHTS, strict=True)
    }


def render_image(label: int, *, size: int, rng: np.random.Generator) -> np.ndarray:
    """One size x size uint8 grey image of class `label` (an index into CLASS_NAMES)."""
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label {label} is not a class index; use 0..{len(CLASS_NAMES) - 1}")
    grid = _Grid(size)
    signal = _SCENES[label](grid, rng) + _medium(grid, rng)
    signal = _blur(signal, sigma=rng.uniform(0.3, 0.8) * grid.unit)  # optics: slight defocus
    return _expose(signal, rng)


# --- scenes: one per class, all in units of the "plain medium" level 0 ---------


class _Grid:
    """Pixel coordinates and the length unit: one unit is a pixel at 64 px."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.unit = size / 64
        self.y, self.x = np.mgrid[0:size, 0:size].astype(np.float64)

    def uniform_points(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` random (y, x) positions inside the image."""
        return rng.uniform(0, self.size, size=(count, 2))


def _background(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    signal = _debris(grid, rng, count=rng.integers(0, 5))
    if rng.random() < 0.5:  # an out-of-focus clump floating above the plane
        cy, cx = grid.uniform_points(rng, 1)[0]
        width = rng.uniform(4, 8) * grid.unit
        signal -= 0.35 * np.exp(-((grid.y - cy) ** 2 + (grid.x - cx) ** 2) / (2 * width**2))
    return signal


def _dead_cells(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    signal = _dead_fragments(grid, rng, clusters=rng.integers(3, 9))
    if rng.random() < 0.3:  # a surviving cell among the dead
        signal += _live_cells(grid, rng, count=1)
    return signal + _debris(grid, rng, count=rng.integers(0, 3))


def _live_outside(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    signal = _live_cells(grid, rng, count=rng.integers(2, 8))
    if rng.random() < 0.4:  # dying cells drift among the live ones
        signal += _dead_fragments(grid, rng, clusters=rng.integers(1, 3))
    return signal + _debris(grid, rng, count=rng.integers(0, 3))


def _live_inside(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    signal = _packed_cells(grid, rng)
    if rng.random() < 0.35:  # the patch catches the spheroid's edge
        inside, edge = _spheroid_edge(grid, rng)
        signal = signal * inside - 0.9 * edge
    return signal


_SCENES = (_background, _dead_cells, _live_outside, _live_inside)


# --- building blocks ------------------------------------------------------------


def _radial(grid: _Grid, centres: np.ndarray, radii: np.ndarray, wobble: float, rng: np.random.Generator) -> np.ndarray:
    """Distance from each centre in units of its radius, shape (k, H, W).

    Radii wobble with the angle (2- and 3-fold harmonics), so `wobble` = 0
    gives circles and larger values irregular, shrunken outlines.
    """
    offset = (grid.x[None] - centres[:, 1, None, None]) + 1j * (grid.y[None] - centres[:, 0, None, None])
    distance = np.abs(offset)
    direction = offset / np.maximum(distance, 1e-9)  # e^(i angle), so harmonics need no trigonometry
    k = len(centres)
    amplitude = rng.uniform(0, wobble, size=(2, k, 1, 1))
    phase = np.exp(1j * rng.uniform(0, 2 * np.pi, size=(2, k, 1, 1)))
    squared = direction * direction
    harmonics = (phase[0] * squared).real * amplitude[0] + (phase[1] * squared * direction).real * amplitude[1]
    return distance / (radii[:, None, None] * (1 + harmonics))


def _live_cells(grid: _Grid, rng: np.random.Generator, count: int) -> np.ndarray:
    """Round cells as brightfield shows them near focus: grey body, dark rim, bright halo."""
    if count == 0:
        return np.zeros_like(grid.x)
    centres = grid.uniform_points(rng, count)
    radii = rng.uniform(4.0, 6.5, size=count) * grid.unit
    rho = _radial(grid, centres, radii, wobble=0.08, rng=rng)
    body = 0.25 * _sigmoid((0.9 - rho) / 0.06)
    nucleus = -0.35 * np.exp(-((rho / 0.35) ** 2))
    rim = -1.0 * np.exp(-(((rho - 1.0) / 0.14) ** 2))
    halo = 0.8 * np.exp(-(((rho - 1.3) / 0.16) ** 2))
    return (body + nucleus + rim + halo).sum(axis=0)


def _dead_fragments(grid: _Grid, rng: np.random.Generator, clusters: int) -> np.ndarray:
    """Clusters of 2-5 small, irregular, uniformly dark fragments with no halo."""
    per_cluster = rng.integers(2, 6, size=clusters)
    centres = np.repeat(grid.uniform_points(rng, clusters), per_cluster, axis=0)
    centres += rng.normal(0, 2.5 * grid.unit, size=centres.shape)
    radii = rng.uniform(0.9, 2.2, size=len(centres)) * grid.unit
    rho = _radial(grid, centres, radii, wobble=0.35, rng=rng)
    darkness = rng.uniform(0.8, 1.3, size=(len(centres), 1, 1))
    return -(darkness * _sigmoid((1.0 - rho) / 0.12)).sum(axis=0)


def _debris(grid: _Grid, rng: np.random.Generator, count: int) -> np.ndarray:
    """Single specks, smaller and fainter than dead-cell fragments."""
    if count == 0:
        return np.zeros_like(grid.x)
    centres = grid.uniform_points(rng, count)
    radii = rng.uniform(0.5, 1.1, size=count) * grid.unit
    rho = _radial(grid, centres, radii, wobble=0.2, rng=rng)
    return -(0.7 * np.exp(-(rho**2))).sum(axis=0)


def _packed_cells(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    """A Voronoi tiling of jittered seeds: cells with dark boundaries and nuclei."""
    radius = rng.uniform(3.5, 5.0) * grid.unit
    spacing = 1.8 * radius
    axis = np.arange(-spacing, grid.size + spacing, spacing)
    seeds = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    seeds += rng.normal(0, 0.3 * spacing, size=seeds.shape)
    # Pixels along rows, seeds along columns: partition then runs over contiguous memory.
    squared = (grid.y.reshape(-1, 1) - seeds[:, 0]) ** 2 + (grid.x.reshape(-1, 1) - seeds[:, 1]) ** 2
    nearest = np.argmin(squared, axis=1).reshape(grid.x.shape)
    first, second = np.sqrt(np.partition(squared, 1, axis=1)[:, :2]).T.reshape(2, *grid.x.shape)
    boundary = -0.9 * np.exp(-(((second - first) / (1.2 * grid.unit)) ** 2))
    nucleus = -0.45 * np.exp(-((first / (0.35 * radius)) ** 2))
    shade = rng.normal(0, 0.15, size=len(seeds))[nearest]  # cells differ a little in density
    return boundary + nucleus + shade


def _spheroid_edge(grid: _Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A soft mask of the spheroid (a large circle covering most of the patch) and its dark rim."""
    angle = rng.uniform(0, 2 * np.pi)
    radius = rng.uniform(1.0, 2.0) * grid.size
    reach = radius - rng.uniform(0.2, 0.4) * grid.size  # how far the edge cuts into the patch
    cy = grid.size / 2 + reach * np.sin(angle)
    cx = grid.size / 2 + reach * np.cos(angle)
    depth = radius - np.hypot(grid.y - cy, grid.x - cx)  # > 0 inside the spheroid
    inside = _sigmoid(depth / grid.unit)
    edge = np.exp(-((depth / (1.5 * grid.unit)) ** 2))
    return inside, edge


def _medium(grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    """What every class shares: uneven illumination and the grain of the culture medium."""
    yy, xx = grid.y / grid.size - 0.5, grid.x / grid.size - 0.5
    gradient = rng.normal(0, 0.3) * yy + rng.normal(0, 0.3) * xx
    vignette = -rng.uniform(0, 0.6) * (yy**2 + xx**2)
    grain = _blur(rng.normal(size=grid.x.shape), sigma=grid.unit)
    return gradient + vignette + 0.06 * grain / max(grain.std(), 1e-9)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(x / 2))  # the logistic function, without exp overflow


def _blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur in the Fourier domain (wraps at the border, harmless for sigma of a pixel or so)."""
    fy = np.fft.fftfreq(field.shape[0])[:, None]
    fx = np.fft.rfftfreq(field.shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    return np.fft.irfft2(np.fft.rfft2(field) * kernel, s=field.shape)


def _expose(signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Normalise, then draw brightness, contrast and camera noise from class-independent ranges."""
    z = (signal - signal.mean()) / max(signal.std(), 1e-9)
    z = 3 * np.tanh(z / 3)  # soft tails: sparse dark fragments must not saturate and shift the mean
    z = (z - z.mean()) / max(z.std(), 1e-9)
    brightness = rng.uniform(0.40, 0.62)
    contrast = rng.uniform(0.05, 0.11)
    noise = rng.uniform(0.008, 0.025)
    image = brightness + contrast * z + rng.normal(0, noise, size=z.shape)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


# --- files and settings -----------------------------------------------------------


def _write_images(folder: Path, *, per_class: int, size: int, seed: int) -> dict[str, int]:
    counts = class_counts(per_class)
    for label, (name, count) in enumerate(counts.items()):
        (folder / name).mkdir()
        for index in range(count):
            rng = np.random.default_rng([seed, label, index])  # each image depends only on its own key
            pixels = render_image(label, size=size, rng=rng)
            Image.fromarray(pixels).save(folder / name / f"c{label}_{index:04d}.png", format="PNG")
    return counts


def _check_free(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"demo data folder {out_dir} is a file; pass a new or empty folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(
            f"demo data folder {out_dir} already exists and is not empty; pass a new or empty folder "
            f"(or delete this one to write it afresh)"
        )


def _read_marker(marker: Path) -> dict:
    try:
        return json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _validated_settings(*, per_class: int, size: int, seed: int) -> dict[str, int]:
    settings = {"per_class": per_class, "size": size, "seed": seed}
    for name, (minimum, maximum) in DEMO_LIMITS.items():
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not minimum <= value <= maximum:
            raise InputError(f"demo data {name}={value!r} is invalid; use an integer from {minimum} to {maximum}")
    return {name: int(value) for name, value in settings.items()}


def _settings_text(settings: dict) -> str:
    return ", ".join(f"{key}={settings.get(key)}" for key in ("per_class", "size", "seed", "generator_version"))


def validated_demo_settings(*, per_class: int, size: int, seed: int) -> dict[str, int]:
    """The generator's settings, checked before anything is written; InputError naming the bad one."""
    return _validated_settings(per_class=per_class, size=size, seed=seed)


def read_demo_settings(table: TomlTable, *, defaults: Mapping[str, int] | None = None) -> dict[str, int]:
    """The generator's settings from a ``[data.demo]`` table (a study file's or a best.toml's), each an
    integer within DEMO_LIMITS; every setting is required unless ``defaults`` are given."""
    if defaults is None:
        table.check_keys((), required=tuple(DEMO_LIMITS))
    else:
        table.check_keys(tuple(DEMO_LIMITS))
    return {name: table.positive(name, int, REQUIRED if defaults is None else defaults[name],
                                 minimum=minimum, maximum=maximum)
            for name, (minimum, maximum) in DEMO_LIMITS.items()}
