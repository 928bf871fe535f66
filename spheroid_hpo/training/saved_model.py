"""The ``model.pt`` file: weights plus what is needed to apply them to new images.

Written by training runs and trials, read by the report and ``predict``. It holds
only tensors, strings and numbers, so ``torch.load(path, weights_only=True)``
opens it without running any pickled code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spheroid_hpo.atomic_write import replacing
from spheroid_hpo.data import validate_image_size
from spheroid_hpo.errors import InputError
from spheroid_hpo.training.models import create_model

FORMAT_VERSION = 1
MODEL_FILE = "model.pt"  # in a run folder, and the name a trial uploads its model under


@dataclass(frozen=True)
class ModelInfo:
    """How a saved model was built and what input it expects."""

    architecture: str
    class_names: tuple[str, ...]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bn_momentum: float | None = None
    # Calibration (spheroid_hpo.training.calibration): logits are divided by ``temperature`` before
    # softmax; ``predict --tta`` flags images whose predictive entropy exceeds ``uncertain_entropy``.
    temperature: float = 1.0
    uncertain_entropy: float | None = None


def check_info(info: ModelInfo) -> None:
    """InputError naming the first value a crafted or damaged file got wrong; ``predict`` trusts the rest.

    A temperature of -1 inverted every prediction and NaN gave NaN probabilities that still
    named a class; ``class_names = "abcd"`` read as four classes a, b, c, d.
    """
    names = info.class_names
    if not (isinstance(names, tuple) and len(names) >= 2 and all(isinstance(n, str) and n for n in names)):
        raise InputError(f"class_names must list at least two non-empty names, but got {names!r}")
    if len(set(names)) != len(names):
        raise InputError(f"class_names repeat a name: {list(names)!r}")
    for key in ("mean", "std"):
        values = getattr(info, key)
        if len(values) != 3 or not all(math.isfinite(v) for v in values) or (key == "std" and min(values) <= 0):
            raise InputError(f"{key} must be three finite numbers{' above 0' if key == 'std' else ''}, "
                             f"but got {list(values)!r}")
    if not (math.isfinite(info.temperature) and info.temperature > 0):
        raise InputError(f"temperature must be finite and above 0, but got {info.temperature!r}")
    entropy = info.uncertain_entropy
    if entropy is not None and not (isinstance(entropy, (int, float)) and math.isfinite(entropy) and entropy >= 0):
        raise InputError(f"uncertain_entropy must be a finite number of at least 0, but got {entropy!r}")


def save_model(path: Path, model: nn.Module, info: ModelInfo) -> Path:
    """Write ``model``'s weights and ``info`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "architecture": info.architecture,
        "class_names": list(info.class_names),
        "image_size": info.image_size,
        "mean": list(info.mean),
        "std": list(info.std),
        "bn_momentum": info.bn_momentum,
        "temperature": float(info.temperature),
        "uncertain_entropy": info.uncertain_entropy,
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
    }
    with replacing(path) as partial:
        torch.save(payload, partial)
    return path


def load_model(path: Path, *, device: torch.device | str = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Rebuild the model saved at ``path`` (a ``model.pt`` or a run folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise InputError(f"no model file at {path}; pass a run folder that holds model.pt, or the model.pt itself")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a checkpoint
        raise InputError(f"{path} is not a spheroid-hpo model file ({error.__class__.__name__}: {error})") from error
    if not isinstance(payload, dict) or "state_dict" not in payload or "architecture" not in payload:
        raise InputError(f"{path} is not a spheroid-hpo model file: it lacks the architecture and weights")
    fix = "re-export it with `spheroid-hpo train` or `reproduce --out`, or pass another model.pt"
    try:
        if not isinstance(payload.get("class_names"), (list, tuple)):
            raise TypeError(f"class_names must be a list, but got {payload.get('class_names')!r}")
        info = ModelInfo(
            architecture=payload["architecture"],
            class_names=tuple(payload["class_names"]),
            image_size=int(payload["image_size"]),
            mean=tuple(float(value) for value in payload["mean"]),
            std=tuple(float(value) for value in payload["std"]),
            bn_momentum=payload.get("bn_momentum"),
            # Absent from files written before calibration: raw softmax, no uncertainty flag.
            temperature=float(1.0 if payload.get("temperature") is None else payload["temperature"]),
            uncertain_entropy=payload.get("uncertain_entropy"),
        )
    except (KeyError, TypeError, ValueError) as error:  # a key missing, or "big" as image_size
        raise InputError(
            f"{path} has a missing or malformed entry ({error.__class__.__name__}: {error}); {fix}"
        ) from None
    try:  # the bounds every image size gets: training could not have written another, predict cannot use it
        validate_image_size(info.image_size, fix=fix)
        check_info(info)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    model = create_model(info.architecture, num_classes=len(info.class_names), bn_momentum=info.bn_momentum)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as error:  # missing, unexpected or reshaped weights
        first = str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
        raise InputError(f"{path} holds weights that do not fit {info.architecture} ({first}); {fix}") from None
    model.to(device, memory_format=torch.channels_last).eval()
    return model, info

