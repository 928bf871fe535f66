"""Running a trained model over images: normalisation, batching for the device, logits and scores."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spheroid_hpo.training.device import autocast
from spheroid_hpo.training.metrics import classification_metrics

__all__ = ["EVAL_BATCH_SIZE", "IMAGENET_MEAN", "IMAGENET_STD", "evaluate", "normalise", "predict_logits",
           "stats_tensors"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_BATCH_SIZE = 64


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] standardised with per-channel ``mean`` and ``std`` tensors."""
    return (images - mean) / std


def stats_tensors(device: torch.device, mean: Sequence[float], std: Sequence[float]):
    """``mean`` and ``std`` as (1, 3, 1, 1) float32 tensors on ``device``."""
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
    mean_t, std_t = stats_tensors(device, mean, std)
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device, non_blocking=True).float()
        with autocast(device, autocast_dtype):
            outputs.append(model(normalise(batch, mean_t, std_t)).float())
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
