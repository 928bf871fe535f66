"""What an export request names, and the export itself: resolve the model, check it, write it."""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spheroid_hpo.atomic_write import require_writable
from spheroid_hpo.defaults import RUNS_DIR
from spheroid_hpo.errors import InputError
from spheroid_hpo.results.export._registry import ExportJob, export_format
from spheroid_hpo.results.export._source import ModelSource, resolve_source
from spheroid_hpo.training.onnx_model import EXTRA_HINT
from spheroid_hpo.training.run import METRICS_FILE, RUN_SPLIT_FILE
from spheroid_hpo.training.saved_model import MODEL_FILE, load_model

CHECK_IMAGES = 16  # test images every export is compared with PyTorch on


@dataclass(frozen=True)
class ExportRequest:
    """What the user asked to export, and where to."""

    format: str
    out: Path | None = None  # None: the format's file name beside the model (see default_out)
    source: Path | None = None  # a run folder or model.pt; or None with ``study``
    study: str | None = None
    storage_url: str | None = None
    artifact_dir: Path | None = None
    data_dir: Path | None = None
    runs_dir: Path = RUNS_DIR


@dataclass(frozen=True)
class ExportResult:
    """What was written, from which model, and the numbers its check measured."""

    out: Path
    format: str
    description: str  # where the model came from
    checks: dict = field(default_factory=dict)  # what was checked, with the measured numbers


def export_model(request: ExportRequest) -> ExportResult:
    """Export the model ``request`` names; nothing is written unless its check passes."""
    spec = export_format(request.format)
    missing = [name for name in spec.needs if not _installed(name)]
    if missing:
        raise InputError(f"export --format {request.format} needs {', '.join(missing)}; run {EXTRA_HINT}")
    out = Path(request.out) if request.out is not None else default_out(request)
    _check_out(out, request)
    with tempfile.TemporaryDirectory(prefix="spheroid-hpo-export-") as scratch:
        source = resolve_source(
            request.source, study=request.study, storage_url=request.storage_url, artifact_dir=request.artifact_dir,
            data_dir=request.data_dir, runs_dir=Path(request.runs_dir), scratch=Path(scratch),
        )
        network, info = _cpu_model(source)
        checks = spec.write(ExportJob(
            network=network, info=info, source=source, out=out, scratch=Path(scratch),
            check_images=source.test.images[:CHECK_IMAGES].float().cpu().contiguous(),
        ))
    return ExportResult(out=out, format=request.format, description=source.description, checks=checks)


def default_out(request: ExportRequest) -> Path:
    """Where an export without ``out`` goes: in the run folder, beside the model.pt, or in runs/<study>/."""
    source = Path(request.source) if request.source is not None else None
    folder = (source if source is not None and source.is_dir() else
              source.parent if source is not None else Path(request.runs_dir) / (request.study or "."))
    return folder / export_format(request.format).file_name


def _check_out(out: Path, request: ExportRequest) -> None:
    """Refuse an ``out`` that is a file the source run needs (its model.pt, metrics.json or split): the
    export was written over the run's own model, which then no longer loaded. Then ask that it be writable."""
    if request.source is not None:
        source = Path(request.source)
        folder = source if source.is_dir() else source.parent
        needed = {folder / name for name in (MODEL_FILE, METRICS_FILE, RUN_SPLIT_FILE)} | {source}
        if any(out.resolve() == path.resolve() for path in needed):
            raise InputError(f"--out {out} would overwrite a file of the run being exported; "
                             f"choose another file name, e.g. {folder / export_format(request.format).file_name}")
    require_writable(out, option="--out")


def _cpu_model(source: ModelSource):
    network, info = load_model(source.model_path, device="cpu")
    network.to(memory_format=torch.contiguous_format).eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network, info


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is absent
        return False
