"""Where a study's images come from, found on this machine and split exactly as recorded.

A study (or a best.toml) records its data as a ``DataSource``: a folder, or the demo
generator's settings, with the image size and a fingerprint of the split and the files.
Workers, the report, export and ``reproduce`` all find and load data through here, so
each refuses a folder that is not the recorded one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.atomic_write import write_text_atomically
from spheroid_hpo.data.demo import demo_data_dir, ensure_demo_data
from spheroid_hpo.defaults import DEMO_SETTINGS
from spheroid_hpo.errors import InputError

__all__ = ["DataSource", "data_folder", "load_recorded_dataset", "write_manifest_text"]


@dataclass(frozen=True)
class DataSource:
    """The data a study was created on: a folder (``path``) or the demo data set (``demo`` settings)."""

    path: str | None  # None: the generated demo data set
    demo: Mapping[str, int] | None
    image_size: int
    fingerprint: str
    # Digest of the files' bytes (data.content_digest); None on studies recorded before it existed.
    content: str | None = None
    # What the split gave up to near-duplicates when it was made (SplitPlan.relaxed), or None.
    split_relaxed: str | None = None

    def as_dict(self) -> dict:
        """The JSON-able form stored on a study."""
        return {"path": self.path, "demo": dict(self.demo) if self.demo is not None else None,
                "image_size": self.image_size, "fingerprint": self.fingerprint, "content": self.content,
                "split_relaxed": self.split_relaxed}

    @classmethod
    def from_dict(cls, raw: Mapping) -> DataSource:
        """The inverse of ``as_dict``."""
        return cls(path=raw["path"], demo=raw.get("demo"), image_size=int(raw["image_size"]),
                   fingerprint=raw["fingerprint"], content=raw.get("content"), split_relaxed=raw.get("split_relaxed"))

    def difference(self, fingerprint: str, content: str | None) -> str | None:
        """How data with this ``fingerprint`` and ``content`` differs from this data, or None."""
        if fingerprint != self.fingerprint:
            return f"fingerprint {fingerprint[:12]} != {self.fingerprint[:12]}: other files, classes, sizes or split"
        if self.content is not None and content != self.content:
            return (f"the same files and sizes, but other bytes (content {str(content)[:12]} != {self.content[:12]}): "
                    f"images were replaced or swapped between classes")
        return None

    def describe(self) -> str:
        """``the demo data`` or the folder's path, for messages."""
        return self.path or "the demo data"


def data_folder(path: str | Path | None, *, demo: Mapping[str, int] | None = None, data_dir: Path | None = None,
                runs_dir: Path, owner: str = "") -> Path:
    """This machine's data folder: ``data_dir`` when given, else the recorded ``path``, else the demo set.

    The demo set (``demo`` settings, or the generator's defaults) is written under ``runs_dir``
    when absent; the generator writes the same bytes for the same settings, so a recorded
    fingerprint still holds. ``owner`` (``"study paper"``) names what recorded ``path`` when it is missing.
    """
    if data_dir is not None:
        return Path(data_dir)
    if path is not None:
        if owner and not Path(path).is_dir():
            raise InputError(
                f"{owner} was created on {path}, which this machine does not have; "
                f"pass --data with this machine's copy of that folder"
            )
        return Path(path)
    settings = {**DEMO_SETTINGS, **(demo or {})}
    return ensure_demo_data(demo_data_dir(runs_dir, **settings), **settings)


def write_manifest_text(path: Path, text: str) -> Path:
    """Write the study's manifest CSV to ``path`` unless it already holds exactly that text."""
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return path
    # Several workers on one machine may write at once: each renames its own complete file.
    return write_text_atomically(path, text)


def load_recorded_dataset(
    source: DataSource,
    *,
    owner: str,
    manifest_csv: str,
    manifest_path: Path,
    data_dir: Path | None,
    runs_dir: Path,
    splits: Sequence[str],
    progress: bool = False,
):
    """Decode ``splits`` of the recorded data with the recorded split; refuse other data."""
    from spheroid_hpo.data._dataset import load_dataset  # torch, only when data is loaded

    folder = data_folder(source.path, demo=source.demo, data_dir=data_dir, runs_dir=runs_dir, owner=owner)
    write_manifest_text(manifest_path, manifest_csv)
    dataset = load_dataset(
        folder, image_size=source.image_size, manifest_path=manifest_path, splits=splits, progress=progress
    )
    difference = source.difference(dataset.fingerprint, dataset.content)
    if difference is not None:
        raise InputError(
            f"data folder {folder} differs from the data {owner} was created on ({difference}); "
            f"pass --data with the same images (same files, classes and contents)"
        )
    return dataset
