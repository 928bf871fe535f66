"""Classify new images with a saved model: one CSV row per image, never a crash on a bad file.

Images are read exactly as for training (``spheroid_hpo.data``: 16-bit TIFF
stretched by its own range, grey to three channels, antialiased resize) and
normalised with the mean and std saved with the model. Probabilities are
calibrated with the temperature saved with the model (``calibrated=False``: raw
softmax); with ``tta`` they are averaged over the 8 dihedral views, and
agreement, entropy and an ``uncertain`` flag join the row. ``model`` may also be
a file written by ``spheroid-hpo export`` that its format's reader reads back (an ONNX
file, through onnxruntime; ``results.export``'s registry names the reader). Folders are walked
recursively with the data package's rules: image suffixes only, hidden files
and folders skipped. A file that cannot be read gets a row saying why.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from spheroid_hpo.atomic_write import replacing, require_writable
from spheroid_hpo.data import IMAGE_SUFFIXES, decode_images, find_images, is_image_name
from spheroid_hpo.errors import InputError
from spheroid_hpo.training import inference
from spheroid_hpo.training.device import resolve_device
from spheroid_hpo.training.saved_model import load_model
from spheroid_hpo.training.tta import tta_probabilities

CHUNK = 256  # images decoded at a time: memory stays flat on folders of any size


@dataclass(frozen=True)
class PredictSummary:
    """What ``predict`` wrote: the CSV and how many images it scored."""

    out: Path
    images: int  # rows written
    errors: int  # rows that carry an error instead of a prediction
    class_names: tuple[str, ...]


def predict_images(
    *,
    model: Path,
    inputs: Sequence[Path],
    out: Path,
    device: str = "auto",
    batch_size: int = inference.EVAL_BATCH_SIZE,
    calibrated: bool = True,
    tta: bool = False,
    reader: Callable[..., tuple] | None = None,
) -> PredictSummary:
    """Write ``out`` (CSV): path, predicted class, the probability of every class, and an error column.

    ``inputs`` are image files or folders (walked recursively). ``model`` is a ``model.pt``
    or a run folder holding one; or an exported file, with ``reader`` its format's reader
    (``results.export.format_for_file(model).read``: a path and a batch size in, a function
    from images to CPU logits and the ModelInfo out).
    """
    if not inputs:
        raise InputError("pass at least one image or folder to classify")
    if Path(out).is_dir():
        raise InputError(f"--out {out} is a folder; pass a CSV file path such as {Path(out) / 'predictions.csv'}")
    require_writable(Path(out), option="--out")
    logits_fn, info = _load_predictor(Path(model), device=device, batch_size=batch_size, reader=reader)
    files = list(_image_files(inputs))
    if not files:
        raise InputError(
            f"no image files found in {', '.join(str(p) for p in inputs)}; images need a suffix in "
            f"{' '.join(sorted(IMAGE_SUFFIXES))}"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = ["path", "predicted_class", *(f"p_{name}" for name in info.class_names),
               *(TTA_COLUMNS if tta else ()), "error"]
    scoring = _Scoring(logits_fn=logits_fn, temperature=info.temperature if calibrated else 1.0, tta=tta,
                       uncertain_entropy=info.uncertain_entropy)
    errors = 0
    with replacing(out) as partial, open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for start in range(0, len(files), CHUNK):
            rows = _classify(files[start:start + CHUNK], scoring=scoring, info=info)
            errors += sum(1 for row in rows if row[-1])
            writer.writerows(rows)
    return PredictSummary(out=out, images=len(files), errors=errors, class_names=info.class_names)


def _classify(files: list[tuple[str, str]], *, scoring: _Scoring, info) -> list[list]:
    """Rows for one chunk of (path, reason-it-is-not-an-image) pairs, in input order."""
    readable = [path for path, reason in files if not reason]
    images, problems = decode_images(Path("."), readable, image_size=info.image_size)
    reasons = dict(problems)
    probabilities = iter(())
    extras = iter(())
    if len(images):
        p, extra = scoring(images)
        probabilities, extras = iter(p.tolist()), iter(extra)
    blank = [""] * (len(info.class_names) + (len(TTA_COLUMNS) if scoring.tta else 0))
    rows = []
    for path, reason in files:
        reason = reason or reasons.get(path, "")
        if reason:
            rows.append([_csv_path(path), "", *blank, reason])
            continue
        p = next(probabilities)
        best = max(range(len(p)), key=p.__getitem__)
        rows.append([_csv_path(path), info.class_names[best], *(f"{value:.6f}" for value in p), *next(extras), ""])
    return rows


def _csv_path(path: str) -> str:
    """The path with bytes that are not UTF-8 shown as \\xNN (caf\\xe9.png from a Latin-1 share): the
    CSV stays UTF-8 for pandas and spreadsheets. Written as is, one such name lost every row."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _image_files(inputs: Sequence[Path]) -> Iterator[tuple[str, str]]:
    """(path, reason) for every input file: reason is empty for a candidate image.

    A named file is always listed, with a reason when it is not an image; a folder
    contributes its image files only, as the data package finds them.
    """
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            images, _ = find_images(item)
            yield from ((str(item / path), "") for path in images)
        elif item.is_file():
            if is_image_name(item.name):
                yield str(item), ""
            else:
                suffixes = " ".join(sorted(IMAGE_SUFFIXES))
                yield str(item), f"not an image file: suffix {item.suffix or '(none)'} is not one of {suffixes}"
        else:
            raise InputError(f"{item} does not exist; pass image files or folders of images")


# --- Calibration, test-time augmentation and ONNX models (issue 14) ---------------------------------

TTA_COLUMNS = ("tta_agreement", "entropy", "uncertain")


def _load_predictor(model: Path, *, device: str, batch_size: int, reader: Callable[..., tuple] | None):
    """(images in [0, 1] -> raw logits on the CPU, ModelInfo) for a model.pt, a run folder or, with its
    ``reader``, an exported file."""
    if reader is not None:
        return reader(model, batch_size=batch_size)
    network, info = load_model(model, device=resolve_device(device))

    def logits_fn(images: torch.Tensor) -> torch.Tensor:
        return inference.predict_logits(network, images, mean=info.mean, std=info.std, batch_size=batch_size).cpu()

    return logits_fn, info


@dataclass(frozen=True)
class _Scoring:
    """How a chunk of decoded images becomes probabilities (and, with TTA, its extra columns)."""

    logits_fn: Callable[[torch.Tensor], torch.Tensor]
    temperature: float
    tta: bool
    uncertain_entropy: float | None

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, list[list[str]]]:
        if not self.tta:
            return torch.softmax(self.logits_fn(images).float() / self.temperature, dim=1), [[]] * len(images)
        result = tta_probabilities(self.logits_fn, images, temperature=self.temperature)
        threshold = self.uncertain_entropy
        extras = [
            [f"{agreement:.3f}", f"{entropy:.6f}",
             "" if threshold is None else str(entropy > threshold).lower()]
            for agreement, entropy in zip(result.agreement.tolist(), result.entropy.tolist())
        ]
        return result.probabilities, extras
