"""Decoding image files into tensors, and random batch rotation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spheroid_hpo.data import decode_images, rotate_batch, validate_image_size
from spheroid_hpo.data._tensors import _random_degrees, _rotate
from spheroid_hpo.defaults import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from spheroid_hpo.errors import InputError


def save_png(path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return path.name


# --------------------------------------------------------------------------- decode_images


def test_decode_resizes_every_image_to_a_float16_square(tmp_path):
    red = np.zeros((24, 40, 3), np.uint8)
    red[..., 0] = 255
    grey = np.full((32, 32), 51, np.uint8)
    paths = [save_png(tmp_path / "red.png", red), save_png(tmp_path / "grey.png", grey)]

    images, problems = decode_images(tmp_path, paths, image_size=16)

    assert problems == []
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float16
    assert torch.allclose(images[0].float().mean(dim=(1, 2)), torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(images[1].float(), torch.full((3, 16, 16), 0.2), atol=1e-3)


def test_decode_antialiases_fine_detail(tmp_path):
    # Without antialiasing, a 3x bilinear downscale samples whole pixels of a 1-px checkerboard
    # and keeps it black and white; with it, the pattern averages out to grey.
    checker = ((np.indices((96, 96)).sum(axis=0) % 2) * 255).astype(np.uint8)
    images, _ = decode_images(tmp_path, [save_png(tmp_path / "c.png", checker)], image_size=32)
    assert abs(images.float().mean().item() - 0.5) < 0.02
    assert images.float().std().item() < 0.05


def test_unreadable_files_are_reported_and_left_out(tmp_path):
    good = save_png(tmp_path / "good.png", np.full((8, 8), 255, np.uint8))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "noise.png").write_bytes(b"\x89PNG not really")

    images, problems = decode_images(
        tmp_path, ["empty.png", good, "noise.png", "missing.png"], image_size=16, progress=True
    )

    assert images.shape == (1, 3, 16, 16) and torch.all(images == 1)
    assert [path for path, _ in problems] == ["empty.png", "noise.png", "missing.png"]
    assert all(reason for _, reason in problems)


def test_decode_of_no_paths_is_an_empty_batch(tmp_path):
    images, problems = decode_images(tmp_path, [], image_size=16)
    assert images.shape == (0, 3, 16, 16) and problems == []


@pytest.mark.parametrize("image_size", [0, MIN_IMAGE_SIZE - 1, MAX_IMAGE_SIZE + 1, 4000])
def test_an_image_size_outside_the_shared_limits_is_an_input_error(tmp_path, image_size):
    with pytest.raises(InputError, match=f"image size {image_size} is not a whole number of pixels from "
                                         f"{MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}"):
        decode_images(tmp_path, [], image_size=image_size)


def test_the_image_size_limits_themselves_are_accepted():
    assert validate_image_size(MIN_IMAGE_SIZE) == MIN_IMAGE_SIZE
    assert validate_image_size(MAX_IMAGE_SIZE) == MAX_IMAGE_SIZE


# --------------------------------------------------------------------------- rotation


def pattern(size: int = 16, batch: int = 1) -> torch.Tensor:
    """A batch of copies of an asymmetric, smooth pattern (so rotations are tell-apart)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.stack([x, y * x, (x - y).abs()])
    return image.expand(batch, -1, -1, -1).contiguous()


def test_zero_angle_leaves_the_image_unchanged():
    images = pattern(batch=2)
    assert torch.allclose(_rotate(images, torch.zeros(2)), images, atol=1e-6)
    assert rotate_batch(images, max_degrees=0, generator=torch.Generator()) is images


def test_90_degrees_matches_rot90_in_the_interior():
    images = pattern(size=17)
    rotated = _rotate(images, torch.tensor([90.0]))
    expected = torch.rot90(images, 1, dims=(2, 3))
    assert torch.allclose(rotated[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-5)


def test_each_image_gets_its_own_angle():
    rotated = rotate_batch(pattern(batch=2), max_degrees=30, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(rotated[0], rotated[1], atol=1e-3)


def test_angles_are_uniform_within_the_range():
    degrees = _random_degrees(2000, 15.0, torch.Generator().manual_seed(0))
    assert degrees.abs().max() <= 15.0
    assert degrees.min() < -14 and degrees.max() > 14
    assert abs(degrees.mean().item()) < 0.5


def test_rotation_is_deterministic_for_a_seeded_generator():
    images = pattern(batch=4)

    def rotate(seed):
        return rotate_batch(images, max_degrees=45, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(rotate(3), rotate(3))
    assert not torch.equal(rotate(3), rotate(4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_rotation_keeps_dtype_and_channels_last(dtype):
    images = pattern(batch=3).to(dtype).contiguous(memory_format=torch.channels_last)
    rotated = rotate_batch(images, max_degrees=20, generator=torch.Generator().manual_seed(0))
    reference = rotate_batch(images.float(), max_degrees=20, generator=torch.Generator().manual_seed(0))

    assert rotated.dtype == dtype
    assert rotated.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(rotated.float(), reference, atol=1e-2)


def test_negative_range_is_an_input_error():
    with pytest.raises(InputError, match="-5"):
        rotate_batch(pattern(), max_degrees=-5, generator=torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rotation_on_cuda_matches_cpu(dtype):
    images = pattern(batch=4)
    expected = rotate_batch(images, max_degrees=40, generator=torch.Generator().manual_seed(1))
    on_gpu = images.to("cuda", dtype).contiguous(memory_format=torch.channels_last)
    rotated = rotate_batch(on_gpu, max_degrees=40, generator=torch.Generator().manual_seed(1))

    assert rotated.device.type == "cuda" and rotated.dtype == dtype
    assert rotated.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(rotated.float().cpu(), expected, atol=1e-2)
