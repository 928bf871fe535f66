"""read_image / inspect_image: every format, bit depth and layout we accept, and every way a file can be broken."""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from spheroid_hpo.data._formats import IMAGE_SUFFIXES, ImageInfo, UnreadableImage, inspect_image, read_image

GREY = np.array([[0, 51], [102, 255]], dtype=np.uint8)


def _png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)  # the mode follows the array: L, I;16, RGB or RGBA
    return path


def _png_16_bit_rgb(path: Path, pixels: np.ndarray) -> Path:
    """Pillow cannot write 16-bit colour PNGs, so write the chunks by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # bit depth 16, colour type RGB
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def _expect_rgb(image: np.ndarray, grey: np.ndarray) -> None:
    assert image.dtype == np.float32
    assert image.shape == (*grey.shape, 3)
    for channel in range(3):
        np.testing.assert_allclose(image[..., channel], grey, atol=1e-6)


def test_suffixes_are_the_lowercase_image_suffixes() -> None:
    assert IMAGE_SUFFIXES == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def test_8_bit_grey_png_is_divided_by_255_into_three_identical_channels(tmp_path: Path) -> None:
    path = _png(tmp_path / "grey.png", GREY)
    _expect_rgb(read_image(path), GREY / 255)
    assert inspect_image(path) == ImageInfo(format="PNG", bit_depth=8, channels=1, width=2, height=2)


def test_rgb_png_keeps_its_colours(tmp_path: Path) -> None:
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 2] = 255, 51
    image = read_image(_png(tmp_path / "rgb.png", pixels))
    np.testing.assert_allclose(image, pixels / 255, atol=1e-6)


def test_rgba_png_drops_alpha_without_blending(tmp_path: Path) -> None:
    pixels = np.full((2, 2, 4), 200, dtype=np.uint8)
    pixels[..., 3] = 0  # fully transparent must not turn black or white
    path = _png(tmp_path / "rgba.png", pixels)
    np.testing.assert_allclose(read_image(path), 200 / 255, atol=1e-6)
    assert inspect_image(path).channels == 4


def test_palette_png_expands_to_rgb(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "palette.png")
    pixels = read_image(tmp_path / "palette.png")
    np.testing.assert_allclose(pixels[0], [[1, 0, 0], [0, 0, 1]])
    assert inspect_image(tmp_path / "palette.png").channels == 3


def test_16_bit_grey_png_is_stretched_from_its_own_range(tmp_path: Path) -> None:
    pixels = np.array([[1000, 2000], [3000, 1500]], dtype=np.uint16)  # a 12-bit camera: all above 255
    path = _png(tmp_path / "grey16.png", pixels)
    with Image.open(path) as image:
        assert image.mode in ("I;16", "I")  # the modes Pillow uses for 16-bit grey
    _expect_rgb(read_image(path), np.array([[0, 0.5], [1, 0.25]]))
    assert inspect_image(path).bit_depth == 16


def test_16_bit_colour_png_reports_16_bits_and_keeps_a_narrow_range_visible(tmp_path: Path) -> None:
    pixels = np.zeros((2, 2, 3), dtype=np.uint16)
    pixels[0, 0] = 4095  # 12-bit data: Pillow keeps the high byte, 15 of 255
    path = _png_16_bit_rgb(tmp_path / "rgb16.png", pixels)
    assert inspect_image(path) == ImageInfo(format="PNG", bit_depth=16, channels=3, width=2, height=2)
    image = read_image(path)
    assert image.max() == 1.0 and image.min() == 0.0


def test_16_bit_tiff_keeps_its_dynamic_range(tmp_path: Path) -> None:
    pixels = np.array([[0, 1000], [4000, 2000]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "grey16.tif", pixels)
    image = read_image(tmp_path / "grey16.tif")
    assert image.max() == 1.0  # 4000 is the brightest pixel, not clipped at 255
    _expect_rgb(image, np.array([[0, 0.25], [1, 0.5]]))
    assert inspect_image(tmp_path / "grey16.tif") == ImageInfo("TIFF", 16, 1, width=2, height=2)


def test_8_bit_tiff_is_divided_by_255_not_stretched(tmp_path: Path) -> None:
    pixels = np.array([[10, 20]], dtype=np.uint8)
    tifffile.imwrite(tmp_path / "grey8.tif", pixels)
    _expect_rgb(read_image(tmp_path / "grey8.tif"), pixels / 255)


def test_16_bit_rgb_tiff_is_stretched_jointly_so_colours_keep_their_ratio(tmp_path: Path) -> None:
    pixels = np.zeros((1, 2, 3), dtype=np.uint16)
    pixels[0, 1] = (4000, 2000, 0)
    tifffile.imwrite(tmp_path / "rgb16.tif", pixels, photometric="rgb")
    np.testing.assert_allclose(read_image(tmp_path / "rgb16.tif")[0, 1], [1.0, 0.5, 0.0])


def test_planar_channels_first_tiff_is_moved_to_channels_last(tmp_path: Path) -> None:
    planes = np.zeros((3, 4, 5), dtype=np.uint16)
    planes[0], planes[1], planes[2] = 100, 200, 400
    tifffile.imwrite(tmp_path / "planar.tif", planes, photometric="rgb", planarconfig="separate")
    image = read_image(tmp_path / "planar.tif")
    assert image.shape == (4, 5, 3)
    np.testing.assert_allclose(image[2, 3], [0.0, 1 / 3, 1.0], atol=1e-6)
    assert inspect_image(tmp_path / "planar.tif") == ImageInfo("TIFF", 16, 3, width=5, height=4)


def test_multi_page_tiff_gives_its_first_page(tmp_path: Path) -> None:
    first = np.array([[0, 100]], dtype=np.uint16)
    with tifffile.TiffWriter(tmp_path / "stack.tif") as tif:
        tif.write(first)
        tif.write(np.array([[100, 0]], dtype=np.uint16))
    _expect_rgb(read_image(tmp_path / "stack.tif"), np.array([[0.0, 1.0]]))


def test_float_tiff_is_stretched_and_nan_becomes_zero(tmp_path: Path) -> None:
    pixels = np.array([[-2.0, 0.0], [2.0, np.nan]], dtype=np.float32)
    tifffile.imwrite(tmp_path / "float.tif", pixels)
    _expect_rgb(read_image(tmp_path / "float.tif"), np.array([[0, 0.5], [1, 0]]))
    assert inspect_image(tmp_path / "float.tif").bit_depth == 32


def test_constant_16_bit_image_becomes_zeros(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "flat.tif", np.full((3, 3), 777, dtype=np.uint16))
    assert not read_image(tmp_path / "flat.tif").any()


def test_lzw_tiff_decodes_without_the_optional_imagecodecs_package(tmp_path: Path) -> None:
    pixels = np.array([[0, 500], [1000, 250]], dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    _expect_rgb(read_image(tmp_path / "lzw.tif"), np.array([[0, 0.5], [1, 0.25]]))


def test_bmp_and_jpeg_decode(tmp_path: Path) -> None:
    flat = np.full((8, 8), 128, dtype=np.uint8)
    Image.fromarray(GREY).save(tmp_path / "grey.bmp")
    Image.fromarray(flat).save(tmp_path / "grey.jpg", quality=95)
    _expect_rgb(read_image(tmp_path / "grey.bmp"), GREY / 255)
    np.testing.assert_allclose(read_image(tmp_path / "grey.jpg"), 128 / 255, atol=2 / 255)  # lossy
    assert inspect_image(tmp_path / "grey.bmp").format == "BMP"
    assert inspect_image(tmp_path / "grey.jpg").format == "JPEG"


def test_non_square_image_keeps_height_by_width(tmp_path: Path) -> None:
    pixels = np.zeros((3, 7), dtype=np.uint8)
    pixels[2, 6] = 255
    image = read_image(_png(tmp_path / "wide.png", pixels))
    assert image.shape == (3, 7, 3) and image[2, 6, 0] == 1.0
    info = inspect_image(tmp_path / "wide.png")
    assert (info.width, info.height) == (7, 3)


def test_format_is_read_from_the_contents_not_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.tif"
    Image.fromarray(GREY).save(path, format="PNG")
    _expect_rgb(read_image(path), GREY / 255)
    assert inspect_image(path).format == "PNG"


def _valid_bytes(tmp_path: Path, suffix: str) -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    path = tmp_path / f"whole{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, noise.astype(np.uint16))
    else:
        Image.fromarray(noise).save(path)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("empty.png", lambda tmp: b"", "empty file (0 bytes)"),
        ("junk.png", lambda tmp: b"this is a text file, not an image", "not a recognised image"),
        ("cut.png", lambda tmp: _valid_bytes(tmp, ".png")[:200], "truncated PNG"),
        ("cut.jpg", lambda tmp: _valid_bytes(tmp, ".jpg")[:600], "truncated JPEG"),
        ("cut.bmp", lambda tmp: _valid_bytes(tmp, ".bmp")[:600], "truncated BMP"),
        ("cut.tif", lambda tmp: _valid_bytes(tmp, ".tif")[:4000], "truncated TIFF"),
        ("junk.tif", lambda tmp: b"II*\x00" + b"\xff" * 20, "TIFF"),
    ],
)
def test_broken_files_raise_unreadable_image_with_a_reason(tmp_path: Path, name: str, make, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(make(tmp_path))
    for decode in (inspect_image, read_image):
        with pytest.raises(UnreadableImage, match=re.escape(reason)):
            decode(path)


def test_png_with_a_damaged_chunk_is_reported_as_corrupt(tmp_path: Path) -> None:
    data = bytearray(_valid_bytes(tmp_path, ".png"))
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bitflip.png").write_bytes(bytes(data))
    for decode in (inspect_image, read_image):
        with pytest.raises(UnreadableImage, match="corrupt PNG"):
            decode(tmp_path / "bitflip.png")


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage, match="file not found"):
        read_image(tmp_path / "gone.png")


def test_image_info_is_frozen() -> None:
    info = ImageInfo("PNG", 8, 1, width=2, height=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.width = 3  # type: ignore[misc]


@pytest.mark.parametrize("fmt", ["GIF", "EPS", "PPM", "ICO"])
def test_formats_outside_the_readme_list_are_refused_whatever_the_suffix(tmp_path: Path, fmt: str) -> None:
    """Pillow reads each of these; only PNG, JPEG, TIFF and BMP decoders may run (EPS starts Ghostscript)."""
    path = tmp_path / "looks_fine.png"
    Image.new("L", (16, 16), color=90).save(path, format=fmt)
    for read in (read_image, inspect_image):
        with pytest.raises(UnreadableImage, match="expected PNG, JPEG, TIFF or BMP"):
            read(path)
