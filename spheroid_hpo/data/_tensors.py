"""Image files to a float16 tensor, and random rotation of a batch on any device."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spheroid_hpo.data._formats import UnreadableImage, read_image
from spheroid_hpo.defaults import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from spheroid_hpo.errors import InputError

_REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def validate_image_size(image_size: int, *, fix: str = "pass e.g. 224") -> int:
    """Return ``image_size``, or raise InputError (ending in ``fix``) unless it is a whole number of
    pixels from MIN_IMAGE_SIZE to MAX_IMAGE_SIZE."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) \
            or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise InputError(
            f"image size {image_size!r} is not a whole number of pixels from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}; "
            f"{fix}"
        )
    return image_size


# --------------------------------------------------------------------------- decoding


def decode_images(
    root: str | os.PathLike,
    paths: Sequence[str],
    *,
    image_size: int,
    progress: bool = False,
) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """Decode ``root / path`` for each path, once, into a float16 (N, 3, S, S) tensor in [0, 1].

    Each image is resized to S x S (S = image_size) with antialiased bilinear filtering; the
    aspect ratio is not kept. Files that cannot be read are left out of the tensor and returned
    as (path, reason) pairs, in the order of ``paths``. Decoding runs on a thread pool, since
    the image libraries release the GIL while decoding.
    """
    size = validate_image_size(image_size)
    root = Path(root)
    paths = list(paths)
    images = torch.empty((len(paths), 3, size, size), dtype=torch.float16)
    reasons: dict[int, str] = {}

    def decode(index: int) -> None:
        try:
            array = read_image(root / paths[index])
        except (UnreadableImage, OSError) as error:
            reasons[index] = str(error) or type(error).__name__
        except MemoryError:  # one huge file must not end the run
            reasons[index] = "out of memory while decoding or resizing it; downscale or crop it"
        else:
            images[index] = _resize(array, size)

    with _progress_bar(progress, total=len(paths)) as advance:
        if paths:
            with ThreadPoolExecutor(max_workers=min(len(paths), _worker_count())) as pool:
                for future in as_completed([pool.submit(decode, i) for i in range(len(paths))]):
                    future.result()
                    advance()

    problems = [(paths[i], reasons[i]) for i in sorted(reasons)]
    if problems:
        keep = torch.ones(len(paths), dtype=torch.bool)
        keep[sorted(reasons)] = False
        images = images[keep]
    return images, problems


def _worker_count() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # Same rule as ThreadPoolExecutor's default: file reads overlap with decoding.
    return min(32, (cores or 1) + 4)


def _resize(array: np.ndarray, size: int) -> torch.Tensor:
    """H x W x 3 float array in [0, 1] -> float16 (3, size, size)."""
    image = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)
    if image.shape[1:] != (size, size):
        image = F.interpolate(
            image.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return image.clamp_(0.0, 1.0).to(torch.float16)


@contextmanager
def _progress_bar(enabled: bool, *, total: int) -> Iterator[Callable[[], None]]:
    """Yield a function that advances a rich progress bar by one image (a no-op if disabled)."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress  # only the CLI asks for a bar; keep the import lazy

    with Progress() as bar:
        task = bar.add_task("decoding images", total=total)
        yield lambda: bar.advance(task)


# --------------------------------------------------------------------------- rotation


def rotate_batch(
    images: torch.Tensor, *, max_degrees: float, generator: torch.Generator
) -> torch.Tensor:
    """Rotate each image of an (N, C, H, W) batch about its centre by its own random angle,
    drawn uniformly from [-max_degrees, max_degrees] with ``generator``.

    Bilinear sampling; corners that come from outside the image are zero. Works on any device
    for any float dtype, and returns the input's dtype and memory format (e.g. channels_last).
    ``max_degrees == 0`` returns ``images`` itself.
    """
    max_degrees = float(max_degrees)
    if not math.isfinite(max_degrees) or max_degrees < 0:
        raise InputError(
            f"rotation range {max_degrees!r} degrees must be a number >= 0; pass e.g. 15, or 0 "
            f"to turn rotation off"
        )
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"rotate_batch needs a float (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
        )
    if max_degrees == 0 or images.shape[0] == 0:
        return images
    return _rotate(images, _random_degrees(images.shape[0], max_degrees, generator))


def _random_degrees(count: int, max_degrees: float, generator: torch.Generator) -> torch.Tensor:
    """``count`` angles uniform in [-max_degrees, max_degrees], on the generator's device."""
    uniform = torch.rand(count, generator=generator, device=generator.device)
    return (uniform * 2 - 1) * max_degrees


def _rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate images[i] counter-clockwise (as torch.rot90 with dims (2, 3)) by degrees[i]."""
    n, c, h, w = images.shape
    # Half-precision sampling grids are off by up to ~0.1 px (bfloat16: ~1 px) at 224 px, and
    # grid_sample has no half kernels on CPU, so reduced-precision input is sampled in float32.
    work_dtype = torch.float32 if images.dtype in _REDUCED_PRECISION else images.dtype
    radians = torch.deg2rad(degrees.to(device=images.device, dtype=torch.float32))
    cos, sin = radians.cos(), radians.sin()
    # affine_grid maps output to input coordinates, normalised to [-1, 1] along each axis; the
    # h/w factors keep the rotation rigid on non-square images.
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=torch.float32)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta.to(work_dtype), [n, c, h, w], align_corners=False)
    rotated = F.grid_sample(
        images.to(work_dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return rotated.to(images.dtype).contiguous(memory_format=_memory_format(images))


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
