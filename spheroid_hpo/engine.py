"""The training loop: plain PyTorch on in-memory tensors, read top to bottom.

Images arrive decoded and resized once (``spheroid_hpo.data``), as float16 tensors
in [0, 1] that already live on the training device; each step gathers a batch,
rotates every image by its own random angle, normalises and runs the model. The
loop knows nothing of Optuna: a tuning run passes ``on_epoch`` and raises from it
to stop early.

This loop is the only one: ``spheroid-hpo train`` and every trial run it, so what
makes ``benchmarks/epoch_speed.py`` fast is what users get. Measured on CPU
(BENCHMARKS.md): images decoded once, channels_last memory format, the fused
Adam kernel, bfloat16 autocast where the hardware runs it natively and it keeps
the metrics, freed memory kept for reuse, evaluation batches that fit in cache,
one host sync per epoch.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spheroid_hpo.data import rotate_batch
from spheroid_hpo.atomic_write import replacing
from spheroid_hpo.errors import InputError
from spheroid_hpo.training.hyperparams import CLASS_WEIGHTS, MIN_BATCH_SIZE, PRECISIONS, Hyperparams
from spheroid_hpo.metrics import classification_metrics

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_BATCH_SIZE = 64


class CheckpointMismatch(InputError):
    """A checkpoint found at the path belongs to another study, trial or configuration."""


@dataclass(frozen=True)
class EpochStats:
    """What one epoch measured; a run's history is a list of these."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    seconds: float
    images_per_second: float
    # True when the epoch was trained by an earlier, interrupted run and restored from its checkpoint.
    restored: bool = False

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


EpochCallback = Callable[[EpochStats], None]


def check_batch_size(batch_size: int) -> int:
    """``batch_size``, or an InputError below MIN_BATCH_SIZE: a batch of one trains nothing."""
    if batch_size < MIN_BATCH_SIZE:
        raise InputError(
            f"batch size must be at least {MIN_BATCH_SIZE} (BatchNorm cannot train on one image), "
            f"but got {batch_size=}"
        )
    return batch_size


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


def _has_depthwise_convolutions(model: nn.Module) -> bool:
    return any(
        isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels
        for layer in model.modules()
    )


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images - mean) / std


def _stats_tensors(device: torch.device, mean: Sequence[float], std: Sequence[float]):
    shape = (1, 3, 1, 1)
    return (
        torch.tensor(mean, dtype=torch.float32, device=device).view(shape),
        torch.tensor(std, dtype=torch.float32, device=device).view(shape),
    )


def _cpu_batch_size(image_size: int) -> int:
    # A budget of 16 images' worth of 224 px pixels, so small images go in larger batches.
    return max(1, min(EVAL_BATCH_SIZE, 16 * 224 * 224 // max(1, image_size * image_size)))


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Float32 logits of ``model`` for ``images`` (N, 3, S, S) in [0, 1], in eval mode.

    ``batch_size`` None picks one for the device: ``EVAL_BATCH_SIZE`` on a GPU; on a
    CPU about 16 images at 224 px, whose activations stay in cache (batches of 64 took
    1.4x to 1.8x as long as batches of 10 on the benchmark CPU, BENCHMARKS.md).
    """
    device = next(model.parameters()).device
    if batch_size is None:
        batch_size = EVAL_BATCH_SIZE if device.type != "cpu" else _cpu_batch_size(images.shape[-1])
    mean_t, std_t = _stats_tensors(device, mean, std)
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device, non_blocking=True).float()
        with _autocast(device, autocast_dtype):
            outputs.append(model(_normalise(batch, mean_t, std_t)).float())
    if not outputs:
        return torch.empty(0, 0, device=device)
    return torch.cat(outputs)


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    autocast_dtype: torch.dtype | None = None,
):
    """Mean cross-entropy and classification metrics of ``model`` on one split."""
    logits = predict_logits(model, images, mean=mean, std=std, autocast_dtype=autocast_dtype)
    labels = labels.to(logits.device)
    loss = F.cross_entropy(logits, labels).item()
    predictions = logits.argmax(dim=1)
    metrics = classification_metrics(labels.cpu().numpy(), predictions.cpu().numpy(), num_classes=num_classes)
    return loss, metrics


def class_weights_for(labels: torch.Tensor, *, num_classes: int, mode: str) -> torch.Tensor | None:
    """Cross-entropy weights for ``mode``: None for "none"; for "balanced", inverse class
    frequency in ``labels`` (the train split), n / (k * n_c), so a balanced split weighs 1 each."""
    if mode not in CLASS_WEIGHTS:
        raise InputError(f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, but got {mode=}")
    if mode == "none":
        return None
    counts = torch.bincount(labels.detach().cpu().long(), minlength=num_classes).float()
    # A class absent from the split gets weight 0: no image of it can be weighted anyway.
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros(()))
    return weights


def train(
    model: nn.Module,
    *,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    hyperparams: Hyperparams,
    seed: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    precision: str = "auto",
    on_epoch: EpochCallback | None = None,
    checkpoint_path: Path | None = None,
    checkpoint_tag: dict | None = None,
    checkpoint_guard: Callable[[], None] | None = None,
    progress: bool = False,
) -> list[EpochStats]:
    """Train ``model`` in place with Adam and cross-entropy under ``hyperparams``; return the per-epoch history.

    The model and the image tensors must already be on the same device. With
    ``checkpoint_path`` the state after every epoch is saved there, and a run that
    finds a checkpoint resumes after its last epoch with the same random stream,
    so an interrupted run ends where an uninterrupted one would. ``checkpoint_tag``
    (study, trial, parameters) is stored in the checkpoint, and a checkpoint with
    another tag is refused: it belongs to another run. ``checkpoint_guard`` is
    called before each checkpoint is written and may raise to stop without writing
    it. ``on_epoch`` is called once per epoch in order, restored epochs included,
    after the epoch's checkpoint is written, and may raise to stop.
    ``class_weights="balanced"`` weights the training loss by inverse class frequency in
    ``train_labels`` (see ``class_weights_for``); validation loss stays unweighted.
    (``bn_momentum`` is the model's, set when it was built.)
    """
    epochs, lr, batch_size, rotation = hyperparams.epochs, hyperparams.lr, hyperparams.batch_size, hyperparams.rotation
    if epochs < 1:
        raise InputError(f"epochs must be at least 1, but got {epochs=}")
    check_batch_size(batch_size)
    if not lr > 0:
        raise InputError(f"learning rate must be positive, but got {lr=}")
    if len(train_images) == 0 or len(val_images) == 0:
        raise InputError("the train and validation splits must each hold at least one image")

    device = next(model.parameters()).device
    if device.type == "cpu":
        _reuse_freed_memory()
    # oneDNN (CPU) and cuDNN convolutions are fastest on NHWC; the batches are made NHWC below.
    model.to(memory_format=torch.channels_last)
    autocast_dtype = resolve_precision(precision, device, model=model)
    mean_t, std_t = _stats_tensors(device, mean, std)
    train_labels = train_labels.to(device)
    loss_weights = class_weights_for(train_labels, num_classes=num_classes, mode=hyperparams.class_weights)
    if loss_weights is not None:
        loss_weights = loss_weights.to(device)
    # One generator drives shuffling and rotation angles, so a seed fixes the run.
    generator = torch.Generator().manual_seed(seed)
    # The fused kernel updates every parameter in one pass: 4 ms instead of foreach's 12 ms
    # per MobileNet step on the benchmark CPU (BENCHMARKS.md).
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=fused, foreach=None if fused else True)
    history: list[EpochStats] = []

    if checkpoint_path is not None and Path(checkpoint_path).exists():
        # On the CPU first: RNG states must be CPU tensors; the state dicts are copied to the device.
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if checkpoint.get("tag") != checkpoint_tag:
            raise CheckpointMismatch(
                f"checkpoint {checkpoint_path} belongs to another run ({checkpoint.get('tag')}), not to "
                f"{checkpoint_tag}; delete it or use another checkpoint folder"
            )
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        generator.set_state(checkpoint["generator"])
        # Dropout draws from the global generators; restoring them makes the resumed epochs
        # the very epochs an uninterrupted run would have trained.
        if "torch_rng" in checkpoint:  # absent from checkpoints of older versions
            torch.set_rng_state(checkpoint["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in checkpoint:
            torch.cuda.set_rng_state(checkpoint["cuda_rng"], device)
        history = [replace(EpochStats(**record), restored=True) for record in checkpoint["history"]]
        for record in history:
            if on_epoch is not None:
                on_epoch(record)

    bar = _EpochBar(total=epochs, enabled=progress, done=len(history))
    with bar:
        for epoch in range(len(history) + 1, epochs + 1):
            started = time.perf_counter()
            model.train()
            order = torch.randperm(len(train_images), generator=generator).to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                # BatchNorm cannot normalise a batch of one image in train mode.
                if len(index) < 2:
                    continue
                images = train_images[index].float()
                images = rotate_batch(images, max_degrees=rotation, generator=generator)
                images = _normalise(images, mean_t, std_t).contiguous(memory_format=torch.channels_last)
                labels = train_labels[index]
                with _autocast(device, autocast_dtype):
                    logits = model(images)
                    loss = F.cross_entropy(logits.float(), labels, weight=loss_weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # Accumulate on the device; one host sync per epoch keeps a GPU busy.
                loss_sum += loss.detach() * len(index)
                correct += (logits.argmax(dim=1) == labels).sum()
                seen += len(index)
            if seen == 0:
                raise InputError(
                    f"epoch {epoch} trained on no image: the train split holds {len(train_images)} "
                    f"image(s) and batches of one are skipped (BatchNorm); add images or lower the batch size"
                )
            # .item() waits for the device, so the throughput counts every queued GPU step.
            train_loss = loss_sum.item() / max(seen, 1)
            train_seconds = time.perf_counter() - started
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"training loss became {train_loss} in epoch {epoch} (lr={lr:g}); "
                    "a lower learning rate or fp32 precision usually avoids this"
                )
            val_loss, val_metrics = evaluate(
                model, val_images, val_labels,
                num_classes=num_classes, mean=mean, std=std, autocast_dtype=autocast_dtype,
            )
            stats = EpochStats(
                epoch=epoch,
                train_loss=train_loss,
                train_accuracy=correct.item() / max(seen, 1),
                val_loss=val_loss,
                val_accuracy=val_metrics.accuracy,
                val_macro_f1=val_metrics.macro_f1,
                seconds=time.perf_counter() - started,
                images_per_second=seen / train_seconds if train_seconds > 0 else 0.0,
            )
            history.append(stats)
            if checkpoint_path is not None:
                if checkpoint_guard is not None:
                    checkpoint_guard()
                _save_checkpoint(Path(checkpoint_path), model=model, optimizer=optimizer,
                                 generator=generator, history=history, device=device, tag=checkpoint_tag)
            bar.advance(stats)
            if on_epoch is not None:
                on_epoch(stats)
    return history


@functools.cache
def _reuse_freed_memory() -> None:
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


def _save_checkpoint(path: Path, *, model, optimizer, generator, history, device: torch.device,
                     tag: dict | None) -> None:
    # Write then rename: a worker killed mid-save must never leave a torn checkpoint.
    state = {
        "tag": tag,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": [record.as_dict() for record in history],
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    with replacing(path) as partial:
        torch.save(state, partial)


class _EpochBar:
    """A rich progress bar over epochs showing the latest validation macro-F1."""

    def __init__(self, *, total: int, enabled: bool, done: int = 0):
        self._progress = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
            )
            self._task = self._progress.add_task("train", total=total, completed=done, status="")

    def __enter__(self):
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc_info):
        if self._progress is not None:
            self._progress.stop()

    def advance(self, stats: EpochStats) -> None:
        if self._progress is not None:
            status = f"val macro-F1 {stats.val_macro_f1:.3f}  loss {stats.train_loss:.3f}"
            self._progress.update(self._task, advance=1, status=status)


def seed_everything(seed: int) -> None:
    """Seed torch and numpy so weight initialisation and dropout repeat for a seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
