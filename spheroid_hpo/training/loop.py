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

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spheroid_hpo.atomic_write import replacing
from spheroid_hpo.data import rotate_batch
from spheroid_hpo.errors import InputError
from spheroid_hpo.training import device as device_policy
from spheroid_hpo.training.device import autocast, resolve_precision
from spheroid_hpo.training.hyperparams import CLASS_WEIGHTS, Hyperparams
from spheroid_hpo.training.inference import IMAGENET_MEAN, IMAGENET_STD, evaluate, normalise, stats_tensors
from spheroid_hpo.training.settings import TRAINING_DEFAULTS

__all__ = ["CheckpointMismatch", "EpochStats", "class_weights_for", "train"]


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
        """One row of the per-epoch history."""
        return asdict(self)


EpochCallback = Callable[[EpochStats], None]


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
    precision: str = TRAINING_DEFAULTS.precision,
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
    # Hyperparams checked its own bounds when it was made (lr finite and in (0, 1], batch size >= 2, ...).
    epochs, lr, batch_size, rotation = hyperparams.epochs, hyperparams.lr, hyperparams.batch_size, hyperparams.rotation
    if len(train_images) == 0 or len(val_images) == 0:
        raise InputError("the train and validation splits must each hold at least one image")

    device = next(model.parameters()).device
    if device.type == "cpu":
        device_policy.reuse_freed_memory()
    # oneDNN (CPU) and cuDNN convolutions are fastest on NHWC; the batches are made NHWC below.
    model.to(memory_format=torch.channels_last)
    autocast_dtype = resolve_precision(precision, device, model=model)
    mean_t, std_t = stats_tensors(device, mean, std)
    train_labels = train_labels.to(device)
    loss_weights = class_weights_for(train_labels, num_classes=num_classes, mode=hyperparams.class_weights)
    if loss_weights is not None:
        loss_weights = loss_weights.to(device)
    # One generator drives shuffling and rotation angles, so a seed fixes the run.
    generator = torch.Generator().manual_seed(seed)
    # The fused kernel updates every parameter in one pass: 4 ms instead of foreach's 12 ms
    # per MobileNet step on the benchmark CPU (BENCHMARKS.md).
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=hyperparams.weight_decay, fused=fused,
                                 foreach=None if fused else True)
    history: list[EpochStats] = []

    if checkpoint_path is not None and Path(checkpoint_path).exists():
        history = _restore_checkpoint(Path(checkpoint_path), tag=checkpoint_tag, model=model, optimizer=optimizer,
                                      generator=generator, device=device)
        for record in history:
            if on_epoch is not None:
                on_epoch(record)

    bar = _EpochBar(total=epochs, enabled=progress, done=len(history))
    with bar:
        for epoch in range(len(history) + 1, epochs + 1):
            started = time.perf_counter()
            # Set from the epoch number alone, so a run resumed from a checkpoint gets the same rates.
            for group in optimizer.param_groups:
                group["lr"] = hyperparams.learning_rate(epoch)
            loss_sum, correct, seen = _train_one_epoch(
                model, optimizer, images=train_images, labels=train_labels, batch_size=batch_size, rotation=rotation,
                generator=generator, mean_t=mean_t, std_t=std_t, device=device, autocast_dtype=autocast_dtype,
                loss_weights=loss_weights,
            )
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


def _restore_checkpoint(path: Path, *, tag: dict | None, model: nn.Module, optimizer, generator: torch.Generator,
                        device: torch.device) -> list[EpochStats]:
    """Put the state saved in ``path`` back into the model, optimizer and random generators; return
    the epochs it had trained (marked restored). CheckpointMismatch when another run wrote it."""
    # On the CPU first: RNG states must be CPU tensors; the state dicts are copied to the device.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("tag") != tag:
        raise CheckpointMismatch(
            f"checkpoint {path} belongs to another run ({checkpoint.get('tag')}), not to "
            f"{tag}; delete it or use another checkpoint folder"
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
    return [replace(EpochStats(**record), restored=True) for record in checkpoint["history"]]


def _train_one_epoch(model: nn.Module, optimizer, *, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                     rotation: float, generator: torch.Generator, mean_t: torch.Tensor, std_t: torch.Tensor,
                     device: torch.device, autocast_dtype: torch.dtype | None, loss_weights: torch.Tensor | None):
    """One pass over the shuffled training images; (summed loss, correct count) as device tensors, and
    the number of images trained on. No host sync here: the caller's ``.item()`` is the epoch's one."""
    model.train()
    order = torch.randperm(len(images), generator=generator).to(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        # BatchNorm cannot normalise a batch of one image in train mode.
        if len(index) < 2:
            continue
        batch = images[index].float()
        batch = rotate_batch(batch, max_degrees=rotation, generator=generator)
        batch = normalise(batch, mean_t, std_t).contiguous(memory_format=torch.channels_last)
        targets = labels[index]
        with autocast(device, autocast_dtype):
            logits = model(batch)
            loss = F.cross_entropy(logits.float(), targets, weight=loss_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Accumulate on the device; one host sync per epoch keeps a GPU busy.
        loss_sum += loss.detach() * len(index)
        correct += (logits.argmax(dim=1) == targets).sum()
        seen += len(index)
    return loss_sum, correct, seen


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
