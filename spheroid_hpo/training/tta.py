"""Test-time augmentation over the 8 dihedral transforms of a square image.

Microscopy patches have no up or down and no left or right, so the four
rotations by 90 degrees, each with and without a mirror flip, show the model
the same specimen eight times. Averaging its probabilities over them gives a
steadier prediction; how often the eight votes agree, and the entropy of the
averaged probabilities, say how sure it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["TTA_TRANSFORMS", "TTAResult", "dihedral_views", "tta_probabilities", "predictive_entropy"]

TTA_TRANSFORMS = 8


def dihedral_views(images: torch.Tensor) -> list[torch.Tensor]:
    """The 8 dihedral transforms of ``images`` (N, C, H, W): rotations by k*90 degrees, plain and mirrored."""
    views = []
    for k in range(4):
        rotated = torch.rot90(images, k, dims=(-2, -1))
        views.extend((rotated, torch.flip(rotated, dims=(-1,))))
    return views


def predictive_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of ``probabilities``: 0 for a sure prediction, log(K) for a uniform one."""
    p = probabilities.clamp_min(1e-12)
    return -(probabilities * p.log()).sum(dim=1)


@dataclass(frozen=True)
class TTAResult:
    """Per image: probabilities averaged over the 8 views, agreement of the views, entropy."""

    probabilities: torch.Tensor  # (N, K)
    agreement: torch.Tensor  # (N,) fraction of the 8 views whose top class is the averaged top class
    entropy: torch.Tensor  # (N,) predictive entropy of the averaged probabilities, nats

    @property
    def max_entropy(self) -> float:
        """The entropy of a uniform prediction: the most uncertain one possible."""
        return math.log(self.probabilities.shape[1])


def tta_probabilities(
    logits_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *, temperature: float = 1.0
) -> TTAResult:
    """Average ``softmax(logits_fn(view) / temperature)`` over the 8 dihedral views of ``images``."""
    per_view = torch.stack([
        torch.softmax(logits_fn(view.contiguous()).float().cpu() / temperature, dim=1)
        for view in dihedral_views(images)
    ])  # (8, N, K)
    mean = per_view.mean(dim=0)
    top = mean.argmax(dim=1)
    agreement = (per_view.argmax(dim=2) == top.unsqueeze(0)).float().mean(dim=0)
    return TTAResult(probabilities=mean, agreement=agreement, entropy=predictive_entropy(mean))
