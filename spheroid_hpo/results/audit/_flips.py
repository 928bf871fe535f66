"""Planted label errors: a copy of a data folder with a known share of its images moved to another class."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from spheroid_hpo.data import DEFAULT_MANIFEST_NAME, scan_folder
from spheroid_hpo.errors import InputError


def plant_flips(source: Path, copy: Path, *, fraction: float, seed: int = 0) -> dict[str, str]:
    """Copy ``source`` to ``copy`` (never writing to ``source``) and move ``fraction`` of its images,
    drawn with ``seed``, each into another class folder drawn with ``seed``.

    Returns the moved files' new paths (relative to ``copy``, as the audit's CSV names them),
    each mapped to the class it truly belongs to. The copy has no split manifest: the next run
    splits the flipped folder afresh. A file whose name the target class already holds goes
    into a ``moved-N`` subfolder, which the folder scan reads like any other.
    """
    if not 0 < fraction < 1:
        raise InputError(f"fraction must lie between 0 and 1, but got {fraction}")
    source, copy = Path(source), Path(copy)
    if copy.exists():
        raise InputError(f"{copy} exists; pass a new folder for the flipped copy")
    folder = scan_folder(source)
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(DEFAULT_MANIFEST_NAME))
    rng = random.Random(seed)
    chosen = rng.sample(folder.files, round(fraction * len(folder.files)))
    truth = {}
    for file in sorted(chosen, key=lambda f: f.path):
        true_class = folder.class_names[file.label]
        target = rng.choice([name for name in folder.class_names if name != true_class])
        old = copy / file.path
        new = copy / target / Path(file.path).name
        copies = 0
        while new.exists():
            copies += 1
            new = copy / target / f"moved-{copies}" / Path(file.path).name
        new.parent.mkdir(parents=True, exist_ok=True)
        old.rename(new)
        truth[new.relative_to(copy).as_posix()] = true_class
    return truth
