"""ONNX files written by ``spheroid-hpo export --format onnx``, read back for ``predict``.

The exported graph takes images as the data package decodes them: float32
(N, 3, S, S) in [0, 1]. It normalises them with the model's own mean and std,
and returns two outputs: ``probabilities`` (softmax of the logits divided by
the fitted temperature) and the raw ``logits``. The model's ``ModelInfo``
(classes, size, statistics, temperature) travels as JSON in the file's
metadata under ``METADATA_KEY``.

onnxruntime is imported only here and only when an ONNX file is opened; it
comes with the ``export`` extra.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from spheroid_hpo.data import validate_image_size
from spheroid_hpo.errors import InputError
from spheroid_hpo.training.saved_model import ModelInfo, check_info

METADATA_KEY = "spheroid_hpo"
INPUT_NAME = "image"
OUTPUT_NAMES = ("probabilities", "logits")
EXTRA_HINT = "pip install 'spheroid-hpo[export]'"


def info_to_json(info: ModelInfo) -> str:
    """``info`` as the JSON text an exported file carries in its metadata."""
    return json.dumps(asdict(info))


def info_from_json(text: str) -> ModelInfo:
    """The ``ModelInfo`` that ``info_to_json`` wrote; InputError (without the file's name) when the
    text is not that: not JSON, keys missing or unknown, or values ``check_info`` refuses."""
    try:
        data = json.loads(text)
        for key in ("class_names", "mean", "std"):
            if not isinstance(data[key], list):
                raise TypeError(f"{key} must be a list, but got {data[key]!r}")
            data[key] = tuple(data[key])
        info = ModelInfo(**data)
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"malformed {METADATA_KEY} metadata ({error.__class__.__name__}: {error})") from None
    validate_image_size(info.image_size)
    check_info(info)
    return info


def require_onnxruntime():
    """The ``onnxruntime`` module, or an ``InputError`` naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise InputError(f"ONNX models need onnxruntime, which is not installed; run {EXTRA_HINT}") from None
    return onnxruntime


def load_onnx_model(path: Path, *, batch_size: int = 64) -> tuple[Callable[[torch.Tensor], torch.Tensor], ModelInfo]:
    """A function from images in [0, 1] to raw logits (CPU float32), and the model's info."""
    ort = require_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no ONNX file at {path}; pass a file written by `spheroid-hpo export --format onnx`")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable files
        raise InputError(f"{path} is not a readable ONNX model ({error.__class__.__name__}: {error})") from None
    metadata = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in metadata or {o.name for o in session.get_outputs()} != set(OUTPUT_NAMES):
        raise InputError(
            f"{path} is an ONNX model but not one exported by spheroid-hpo (no class names or statistics in it); "
            f"export it with `spheroid-hpo export RUN --format onnx`"
        )
    fix = "export it again with `spheroid-hpo export RUN --format onnx`"
    try:
        info = info_from_json(metadata[METADATA_KEY])
    except InputError as error:
        raise InputError(f"{path}: {error}; {fix}") from None
    widths = {o.name: o.shape[-1] for o in session.get_outputs() if o.shape}
    if any(isinstance(width, int) and width != len(info.class_names) for width in widths.values()):
        raise InputError(f"{path} names {len(info.class_names)} classes but its outputs have {widths} columns; {fix}")

    def logits_fn(images: torch.Tensor) -> torch.Tensor:
        outputs = []
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].float().cpu().contiguous().numpy()
            (logits,) = session.run(["logits"], {INPUT_NAME: batch})
            if np.shape(logits)[-1] != len(info.class_names):  # a symbolic width, checked on real output
                raise InputError(f"{path} names {len(info.class_names)} classes but gives "
                                 f"{np.shape(logits)[-1]} outputs; {fix}")
            outputs.append(torch.from_numpy(np.asarray(logits, dtype=np.float32)))
        return torch.cat(outputs) if outputs else torch.empty(0, len(info.class_names))

    return logits_fn, info
