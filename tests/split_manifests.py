"""Split manifests for tests (import as `from split_manifests import write_uneven_manifest`)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from spheroid_hpo.data import SplitSpec, prepare_split

# A regex on the demo file names (c<label>_<index>.png): ten groups that cut across classes.
GROUP_BY = r"_\d{3}(\d)\.png"


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_uneven_manifest(data_dir: Path, path: Path) -> dict[str, int]:
    """The default split with one class-0 training image moved to val and four class-3 ones to test.

    Validation and test then differ in size and in class mix from each other and
    from training; returns the size of each split.
    """
    scratch = path.with_name(f"{path.stem}-default.csv")
    prepare_split(data_dir, SplitSpec(manifest=scratch))
    rows = read_manifest(scratch)
    moves = {"0_background": ("val", 1), "3_live_inside": ("test", 4)}
    for row in rows:
        target = moves.get(row["class"])
        if row["split"] == "train" and target and target[1] > 0:
            row["split"] = target[0]
            moves[row["class"]] = (target[0], target[1] - 1)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sizes = Counter(row["split"] for row in rows)
    assert sizes["val"] != sizes["test"]
    return dict(sizes)
