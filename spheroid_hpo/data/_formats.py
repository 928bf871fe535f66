"""Decode microscopy images of any common format into float RGB arrays.

TIFF goes through tifffile, which keeps 16-bit and float data intact; PNG,
JPEG and BMP go through Pillow. Every failure becomes `UnreadableImage` with a
short reason a person can act on, so callers can report a file and move on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

# The only Pillow decoders that may run, whatever a file's bytes say. Without this list Pillow
# identifies any format it knows: PostScript named evil.png went to the EPS plugin, which runs
# Ghostscript (an interpreter whose -dSAFER has been escaped before); an animated GIF named
# .png was read too. TIFF is here for the LZW/JPEG TIFFs tifffile hands over.
PIL_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "TIFF", "BMP")

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_PIL_BIT_DEPTHS = {"1": 1, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}
_PIL_NATIVE_MODES = frozenset({"1", "L", "RGB", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


# Decoded samples (width x height x samples per pixel) a file may hold: 2**28 float32 samples
# are 1 GiB. A 400 kB deflate TIFF can claim 20000 x 20000 pixels; refuse it before decoding.
MAX_SAMPLES = 2**28


class UnreadableImage(Exception):
    """An image file that cannot be decoded; `str(e)` is the short human reason."""


@dataclass(frozen=True)
class ImageInfo:
    """What an image file holds, read from its header.

    `channels` counts samples per pixel as stored (RGBA reports 4, a palette
    reports 3); `bit_depth` is bits per sample: 8 or 16 for most images, 32
    for float (or 32-bit integer) data, 1 for black-and-white.
    """

    format: str
    bit_depth: int
    channels: int
    width: int
    height: int


def inspect_image(path: str | os.PathLike[str]) -> ImageInfo:
    """Read an image's header and cheaply check that its data is all there.

    The check is format specific and avoids a full decode where it can: PNG
    chunk checksums, TIFF strip extents, a 1/8-scale JPEG decode. Raises
    `UnreadableImage` for empty, truncated, corrupt or unknown files.
    """
    path = Path(path)
    if _is_tiff(path):
        with _open_tiff(path) as tif:
            return _checked_size(_tiff_info(tif.pages[0]))
    with _open_pil(path) as img:
        info = _checked_size(_pil_info(img, path))
        _decode_pil(img, full=False)
    return info


def _checked_size(info: ImageInfo) -> ImageInfo:
    samples = info.width * info.height * max(1, info.channels)
    if samples > MAX_SAMPLES:
        raise UnreadableImage(
            f"too large to decode safely ({info.width}x{info.height}x{info.channels} samples, limit {MAX_SAMPLES}); "
            "downscale or crop it"
        )
    return info


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image to a float32 array of shape (H, W, 3) with values in [0, 1].

    8-bit data is divided by 255. Other depths (16-bit, 32-bit, float) are
    stretched from the image's own min..max, so a 12-bit camera image stored
    in 16 bits is not left nearly black and nothing is clipped at 255; a
    constant image becomes zeros. Grey is repeated into 3 channels, alpha is
    dropped and palettes are expanded. A multi-page TIFF gives its first page.
    Raises `UnreadableImage` with a short reason.
    """
    path = Path(path)
    try:
        pixels = _read_tiff(path) if _is_tiff(path) else _read_pil(path)
        return _to_rgb(pixels)
    except MemoryError:
        raise UnreadableImage("out of memory while decoding it; downscale or crop it") from None


# --- TIFF --------------------------------------------------------------------


def _is_tiff(path: Path) -> bool:
    """Dispatch on content, not suffix: a mislabelled file still decodes."""
    with _opened(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise UnreadableImage("empty file (0 bytes)")
    return head in _TIFF_MAGIC


def _open_tiff(path: Path) -> tifffile.TiffFile:
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises many types for damaged headers
        raise UnreadableImage(f"corrupt TIFF header ({_first_line(exc)})") from exc
    try:
        _check_first_page(tif)
    except BaseException:
        tif.close()
        raise
    return tif


def _check_first_page(tif: tifffile.TiffFile) -> None:
    """Fail early on a TIFF without a first page, or one cut short: a truncated
    TIFF keeps a valid header whose strips point past the end of the file."""
    try:
        page = tif.pages[0]
    except IndexError:
        raise UnreadableImage("TIFF file holds no images") from None
    except Exception as exc:
        raise UnreadableImage(f"corrupt TIFF directory ({_first_line(exc)})") from exc
    file_size = tif.filehandle.size
    data_end = max(
        (offset + count for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True)),
        default=0,
    )
    if data_end > file_size:
        raise UnreadableImage(f"truncated TIFF ({file_size} of {data_end} bytes)")


def _tiff_info(page: tifffile.TiffPage) -> ImageInfo:
    is_palette = page.photometric == tifffile.PHOTOMETRIC.PALETTE
    return ImageInfo(
        format="TIFF",
        bit_depth=8 if is_palette else _dtype_bit_depth(page.dtype, page.bitspersample),
        channels=3 if is_palette else page.samplesperpixel,
        width=page.imagewidth,
        height=page.imagelength,
    )


def _read_tiff(path: Path) -> np.ndarray:
    with _open_tiff(path) as tif:
        page = tif.pages[0]
        _checked_size(_tiff_info(page))
        try:
            pixels = page.asarray()
        except ValueError as exc:
            if "imagecodecs" not in str(exc):
                raise UnreadableImage(f"corrupt TIFF data ({_first_line(exc)})") from exc
            # LZW, JPEG and other codecs need the optional imagecodecs package;
            # Pillow decodes the common ones itself.
            return _read_pil(path)
        except Exception as exc:
            raise UnreadableImage(f"corrupt TIFF data ({_first_line(exc)})") from exc
        return _tiff_pixels(page, pixels)


def _tiff_pixels(page: tifffile.TiffPage, pixels: np.ndarray) -> np.ndarray:
    """Bring a TIFF page's array to (H, W) or (H, W, C) in [0, 1]."""
    if page.photometric == tifffile.PHOTOMETRIC.PALETTE:
        # The colour map is 16-bit by the TIFF spec, so divide rather than stretch.
        return np.moveaxis(page.colormap[:, pixels], 0, -1).astype(np.float32) / 65535.0
    if pixels.ndim == 3 and page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
        pixels = np.moveaxis(pixels, 0, -1)  # (C, H, W) planes -> (H, W, C)
    if pixels.ndim not in (2, 3):
        raise UnreadableImage(f"unsupported TIFF layout with shape {pixels.shape}")
    unit = _to_unit_range(pixels)
    if page.photometric == tifffile.PHOTOMETRIC.MINISWHITE:
        unit = 1.0 - unit  # 0 means white in this photometric interpretation
    return unit


# --- Pillow (PNG, JPEG, BMP, ...) ---------------------------------------------


def _open_pil(path: Path) -> Image.Image:
    try:
        return Image.open(path, formats=PIL_FORMATS)
    except UnidentifiedImageError as exc:
        raise UnreadableImage("not a recognised image (expected PNG, JPEG, TIFF or BMP data)") from exc
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"too large to decode safely ({_first_line(exc)})") from exc
    except OSError as exc:
        raise UnreadableImage(_os_reason(exc)) from exc


def _pil_info(img: Image.Image, path: Path) -> ImageInfo:
    bit_depth = 16 if _is_16_bit_png(img, path) else _PIL_BIT_DEPTHS.get(img.mode, 8)
    bands = len(img.getbands())
    if img.mode in ("P", "PA"):
        bands += 2  # palette indices expand to RGB
    return ImageInfo(
        format=img.format or "unknown",
        bit_depth=bit_depth,
        channels=bands,
        width=img.width,
        height=img.height,
    )


def _is_16_bit_png(img: Image.Image, path: Path) -> bool:
    """Pillow decodes 16-bit colour PNGs to 8 bits and hides that; the IHDR chunk does not."""
    if img.format != "PNG":
        return False
    with _opened(path, "rb") as handle:
        header = handle.read(25)
    return len(header) == 25 and header[24] == 16  # IHDR bit depth sits at a fixed offset


def _read_pil(path: Path) -> np.ndarray:
    with _open_pil(path) as img:
        _checked_size(_pil_info(img, path))
        _decode_pil(img, full=True)
        pixels = _pil_pixels(img)
        high_byte_only = img.mode in ("RGB", "RGBA", "LA") and _is_16_bit_png(img, path)
    # Pillow kept only the high byte of these; stretch so a narrow 16-bit range stays visible.
    return _stretch(pixels) if high_byte_only else _to_unit_range(pixels)


def _decode_pil(img: Image.Image, *, full: bool) -> None:
    """Decode the pixels, or with full=False check them as cheaply as the format allows."""
    fmt = img.format or "image"
    try:
        if full:
            img.load()
        elif fmt == "PNG":
            img.verify()  # walks every chunk checking CRCs, without inflating pixels
        elif fmt == "JPEG":
            img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()  # a 1/8-scale DCT decode still reads every byte
        else:
            img.load()
    except OSError as exc:
        raise UnreadableImage(_os_reason(exc, fmt)) from exc
    except (SyntaxError, ValueError, EOFError) as exc:  # Pillow's choice for broken chunks
        raise UnreadableImage(f"corrupt {fmt} data ({_first_line(exc)})") from exc


def _pil_pixels(img: Image.Image) -> np.ndarray:
    if img.mode in _PIL_NATIVE_MODES:
        return np.asarray(img)
    if img.mode in ("LA", "La"):
        return np.asarray(img.getchannel("L"))
    return np.asarray(img.convert("RGB"))  # palette, RGBA, CMYK, YCbCr...; alpha dropped


# --- shared ------------------------------------------------------------------


def _to_unit_range(pixels: np.ndarray) -> np.ndarray:
    """8-bit / 255; any other depth stretched from its own min..max."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    return _stretch(pixels)


def _stretch(pixels: np.ndarray) -> np.ndarray:
    """Map min..max to 0..1 (jointly over channels, so colours keep their ratios); NaN/inf -> 0."""
    values = pixels.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros_like(values)
    low, high = values[finite].min(), values[finite].max()
    if high <= low:
        return np.zeros_like(values)
    unit = (values - low) / (high - low)
    unit[~finite] = 0.0
    return unit


def _to_rgb(unit: np.ndarray) -> np.ndarray:
    if unit.ndim == 3 and unit.shape[-1] == 1:
        unit = unit[..., 0]
    if unit.ndim == 2:
        unit = np.repeat(unit[..., None], 3, axis=-1)
    elif unit.shape[-1] == 2:  # grey + alpha
        unit = np.repeat(unit[..., :1], 3, axis=-1)
    elif unit.shape[-1] >= 4:
        if unit.shape[-1] > 4:
            raise UnreadableImage(f"{unit.shape[-1]} channels per pixel (expected grey, RGB or RGBA)")
        unit = unit[..., :3]  # drop alpha
    return np.ascontiguousarray(unit, dtype=np.float32)


def _dtype_bit_depth(dtype: np.dtype | None, bits_per_sample: int) -> int:
    if dtype is None or dtype == np.bool_:
        return bits_per_sample
    return 32 if dtype.kind == "f" else dtype.itemsize * 8


def _opened(path: Path, mode: str) -> BinaryIO:
    try:
        return open(path, mode)
    except OSError as exc:
        raise UnreadableImage(_os_reason(exc)) from exc


def _os_reason(exc: OSError, fmt: str | None = None) -> str:
    """A short reason for an OSError; `fmt` is set once the file's format is known."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    message = _first_line(exc)
    if fmt is None:
        return f"cannot read file ({message})"
    if "truncated" in message.lower():
        return f"truncated {fmt}"
    return f"corrupt {fmt} data ({message})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:120]
