"""Where and how a run computes: the device, the autocast precision, the CPU allocator, the seeds."""

from __future__ import annotations

import contextlib
import ctypes
import functools

import numpy as np
import torch
from torch import nn

from spheroid_hpo.errors import InputError
from spheroid_hpo.training.hyperparams import PRECISIONS

__all__ = [
    "PRECISION_NAMES", "autocast", "resolve_device", "resolve_precision", "resolved_precision", "reuse_freed_memory",
    "seed_everything",
]


def resolve_device(device: str) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:1`` into a device, CUDA when present for ``auto``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was asked for but CUDA is not available; use --device cpu or auto")
    return resolved


def resolve_precision(
    precision: str, device: torch.device, *, model: nn.Module | None = None
) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32.

    ``auto`` picks bfloat16 where the hardware runs it natively (CUDA with bf16
    support, CPUs with AVX-512 BF16 or AMX) and fp32 elsewhere, where emulated
    bf16 would be slower than fp32. It also keeps fp32 for a ``model`` with
    depthwise convolutions (MobileNet V3): over 12 seeds, bf16 autocast lowered
    its validation macro-F1 by 0.036 +- 0.013 on the demo data, and on CPU its
    depthwise backward pass is slower than fp32 besides (BENCHMARKS.md). Pass
    the model wherever it is known, so training and evaluation agree.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if model is not None and _has_depthwise_convolutions(model):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return torch.bfloat16
    return None


def resolved_precision(precision: str, device: torch.device, *, model: nn.Module | None = None) -> str:
    """What ``precision`` trains in on ``device``: ``fp32``, ``bf16`` or ``fp16``, never ``auto``.

    This, not ``auto``, is what a trial, a run folder and best.toml record, so a reproduction
    on another machine trains in the same precision whatever ``auto`` would pick there.
    """
    return PRECISION_NAMES[resolve_precision(precision, device, model=model)]


# autocast dtype (None: plain fp32) -> its name in study files, best.toml and trial records.
PRECISION_NAMES: dict[torch.dtype | None, str] = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def _has_depthwise_convolutions(model: nn.Module) -> bool:
    return any(
        isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels
        for layer in model.modules()
    )


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``; no autocast for None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@functools.cache
def reuse_freed_memory() -> None:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc maps every block above 32 MB (one activation of a batch at 224 px)
    afresh and unmaps it when freed, so each training step page-faults its activations
    in again. Served from a heap that is never trimmed, they are reused: MobileNet V3
    trained 1.18x faster on the benchmark CPU, with 80x fewer page faults (BENCHMARKS.md).
    The process keeps its peak memory, which training reuses every step anyway.
    Process-wide; a no-op where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # from glibc's malloc.h
    mallopt(M_MMAP_MAX, 0)
    mallopt(M_TRIM_THRESHOLD, 2**31 - 1)


def seed_everything(seed: int) -> None:
    """Seed torch and numpy so weight initialisation and dropout repeat for a seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
