"""The export formats: each one's name, file name, the extra it needs, its writer and how ``predict`` reads it.

A new format is one entry in ``_REGISTRY`` and its writer; ``export --format``, its help, the default
file name, the missing-extra message, the report's checklist and ``predict --model FILE`` all read
this table.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spheroid_hpo.errors import InputError
from spheroid_hpo.results.export._formats import export_onnx, export_torchscript
from spheroid_hpo.results.export._source import ModelSource
from spheroid_hpo.training.onnx_model import load_onnx_model
from spheroid_hpo.training.saved_model import ModelInfo

__all__ = ["ExportFormat", "ExportJob", "export_format", "format_for_file", "format_names"]


@dataclass(frozen=True)
class ExportJob:
    """What a writer gets: the model on the CPU in eval mode, where it came from, the file to write,
    the test images its check compares against PyTorch, and a scratch folder."""

    network: nn.Module
    info: ModelInfo
    source: ModelSource
    out: Path
    check_images: torch.Tensor
    scratch: Path


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    ``write`` writes ``job.out`` only when its check passes and returns what the check measured.
    ``read`` is how ``predict --model FILE`` reads a file of this format back (a path and a batch
    size in; a function from images in [0, 1] to CPU logits, and the ModelInfo, out), or None
    when ``predict`` does not read it.
    """

    name: str
    file_name: str  # written beside the model when no --out is given
    needs: tuple[str, ...]  # importable modules of the `export` extra it needs
    write: Callable[[ExportJob], dict]
    read: Callable[..., tuple] | None = None
    description: str = ""


def _bioimageio(job: ExportJob) -> dict:
    # bioimageio.core is heavy and optional: imported only when this format is asked for.
    from spheroid_hpo.results.export._bioimageio import export_bioimageio

    return export_bioimageio(job.network, job.source, job.out, scratch=job.scratch)


_ONNX_MODULES = ("onnx", "onnxruntime", "onnxscript")
_REGISTRY: dict[str, ExportFormat] = {
    spec.name: spec for spec in (
        ExportFormat(
            name="bioimageio", file_name="model.bioimageio.zip",
            needs=(*_ONNX_MODULES, "bioimageio.core", "bioimageio.spec"),
            write=_bioimageio, description="a bioimage.io model package (zip), tested offline by bioimageio.core",
        ),
        ExportFormat(
            name="onnx", file_name="model.onnx", needs=_ONNX_MODULES,
            write=lambda job: export_onnx(job.network, job.info, job.out, check_images=job.check_images),
            read=load_onnx_model, description="an ONNX file (opset 18), checked with onnxruntime",
        ),
        ExportFormat(
            name="torchscript", file_name="model.torchscript.pt", needs=(),
            write=lambda job: export_torchscript(job.network, job.info, job.out, check_images=job.check_images),
            description="a traced TorchScript file, checked after reloading",
        ),
    )
}


def format_names() -> tuple[str, ...]:
    """The export format names, in registry order."""
    return tuple(_REGISTRY)


def export_format(name: str) -> ExportFormat:
    """The format called ``name``; InputError listing the valid names (and the nearest) otherwise."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown export format {name!r}{hint}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def format_for_file(path: Path) -> ExportFormat | None:
    """The readable export format a file ``predict --model`` was given is in, by its suffix; None for a
    model.pt or a run folder (read by ``training.saved_model``)."""
    suffix = Path(path).suffix.lower()
    return next((spec for spec in _REGISTRY.values()
                 if spec.read is not None and Path(spec.file_name).suffix == suffix), None)
