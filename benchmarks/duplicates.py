"""Near-duplicate detection: precision and recall of ours against imagededup's perceptual hashes.

Precision: the files each detector puts into near-duplicate groups on folders that hold no
planted copy: the real ifc_cellcycle crops (3,419 brightfield cells, 40 px, 16-bit TIFF), the
demo data (64 and 256 px) and a generated microscope background set (plain field, vignetting,
camera noise, debris; PNG, JPEG q85, 16-bit TIFF; 150-330 px).

Recall: copies of randomly chosen images, made each way `tests/image_sets.COPY_KINDS` lists
(JPEG q75-q95, +-5% brightness or contrast, resized to 3/4 and 1.5x, shifted or cropped by
1-2 px, 8 <-> 16 bit), planted into a copy of each folder next to their originals. A copy
counts as found when the detector puts it in one group with its original; the whole folder is
searched, so look-alikes compete with the original.

imagededup (PHash, DHash; `pip install imagededup`) gets the same decoded pixels as ours,
stretched to 8-bit grey, at its default Hamming threshold (10 of 64 bits) and a stricter one (4);
a file counts as flagged when it has any duplicate, and a copy as found when its original is
among them.

    python benchmarks/duplicates.py                      # 20 copies per kind and set, ~10 min on 2 busy cores
    python benchmarks/duplicates.py --copies 40 --no-library
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import format_table, load_average, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from image_sets import COPY_KINDS, image_paths, plant_copies, write_background_set  # noqa: E402

from spheroid_hpo.data import find_duplicates  # noqa: E402
from spheroid_hpo.data._formats import read_image  # noqa: E402
from spheroid_hpo.data.demo import write_demo_data  # noqa: E402

IFC = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "ifc_cellcycle"

# A detector: (root, relative paths) -> for each path, the set of paths it is grouped with.
Detector = Callable[[Path, list[str]], dict[str, set[str]]]


def ours(root: Path, paths: list[str]) -> dict[str, set[str]]:
    found = find_duplicates(root, paths)
    partners: dict[str, set[str]] = {}
    for group in found.groups(near=True):
        for path in group:
            partners[path] = set(group) - {path}
    return partners


_ENCODINGS: dict[tuple[str, Path], dict[str, str]] = {}


def imagededup_hash(name: str, threshold: int) -> Detector:
    """imagededup's `name` hash (PHash, DHash) with a Hamming distance threshold (of 64 bits)."""

    def detect(root: Path, paths: list[str]) -> dict[str, set[str]]:
        from imagededup import methods

        hasher = getattr(methods, name)(verbose=False)
        if (name, root) not in _ENCODINGS:  # the same folder at another threshold: hash once
            greys = {path: np.rint(read_image(root / path).mean(axis=2) * 255).astype(np.uint8) for path in paths}
            _ENCODINGS[name, root] = {path: hasher.encode_image(image_array=grey) for path, grey in greys.items()}
        found = hasher.find_duplicates(encoding_map=_ENCODINGS[name, root], max_distance_threshold=threshold)
        return {path: set(others) for path, others in found.items() if others}

    return detect


def flagged(detector: Detector, root: Path) -> tuple[int, int, float]:
    paths = image_paths(root)
    start = time.perf_counter()
    partners = detector(root, paths)
    return sum(1 for p in paths if partners.get(p)), len(paths), time.perf_counter() - start


def planted_recall(detector: Detector, root: Path, pairs: list[tuple[str, str, str]]) -> dict[str, float]:
    """Per kind of copy, the share of (kind, original, copy) pairs the detector groups."""
    partners = detector(root, image_paths(root))
    hits: dict[str, list[bool]] = {}
    for kind, original, copy in pairs:
        hits.setdefault(kind, []).append(original in partners.get(copy, set()))
    return {kind: float(np.mean(found)) for kind, found in hits.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=20, help="copies planted per kind and set")
    parser.add_argument("--ifc", type=Path, default=IFC, help="the ifc_cellcycle folder")
    parser.add_argument("--no-library", action="store_true", help="measure ours only")
    parser.add_argument("--thresholds", type=int, nargs="+", default=[10, 4],
                        help="imagededup Hamming thresholds to try (its default is 10)")
    parser.add_argument("--part", choices=("both", "precision", "recall"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny folders, no ifc_cellcycle, one copy per kind, ours only: does it run")
    args = parser.parse_args(argv)
    per_class, background, sizes = 80, 90, (64, 256)
    if args.smoke:
        args.copies, args.no_library, args.ifc, per_class, background, sizes = 1, True, None, 8, 6, (64,)
    detectors: dict[str, Detector] = {"ours": ours}
    if not args.no_library:
        import imagededup.methods  # noqa: F401  (creates its loggers, each with a level of its own)

        for name in [n for n in logging.root.manager.loggerDict if n.startswith("imagededup")]:
            logging.getLogger(name).setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message="Parameter num_enc_workers has no effect")
        for name in ("PHash", "DHash"):
            detectors |= {f"{name.lower()}<={t}": imagededup_hash(name, t) for t in args.thresholds}
    print(load_average())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clean = {"ifc_cellcycle 40px": args.ifc} if args.ifc else {}
        for size in sizes:
            write_demo_data(tmp / f"demo{size}", per_class=per_class, size=size, seed=args.seed)
            clean[f"demo {size}px"] = tmp / f"demo{size}"
        write_background_set(tmp / "background", count=background, seed=args.seed)
        clean["background 150-330px"] = tmp / "background"

        if args.part != "recall":
            rows = []
            for name, root in clean.items():
                row = [name]
                for detector in detectors.values():
                    count, total, seconds = flagged(detector, root)
                    row.append(f"{count}/{total} ({100 * count / total:.1f}%) {seconds:.1f}s")
                rows.append(row)
            print("\nFiles in near-duplicate groups (no planted copy), and the time taken:\n")
            print(format_table(["folder", *detectors], rows))
        if args.part == "precision":
            return
        # Enough demo images to plant every copy next to an original of its own.
        needed = max(per_class, -(-args.copies * len(COPY_KINDS) // 4) + 20)
        if needed > per_class:
            per_class = needed
            for size in sizes:
                shutil.rmtree(tmp / f"demo{size}")
                write_demo_data(tmp / f"demo{size}", per_class=per_class, size=size, seed=args.seed)

        recall: dict[str, dict[str, dict[str, float]]] = {}
        for index, name in enumerate(name for name in clean if not name.startswith("background")):
            target = tmp / f"planted-{index}"
            pairs = plant_copies(clean[name], target, copies=args.copies, seed=args.seed)
            recall[name] = {det: planted_recall(fn, target, pairs) for det, fn in detectors.items()}
        sets = list(recall)
        headers = ["kind of copy"] + [f"{det} {name.split()[-1]}" for det in detectors for name in sets]
        rows = [[kind] + [f"{100 * recall[name][det][kind]:.0f}%" for det in detectors for name in sets]
                for kind in COPY_KINDS]
        print(f"\nPlanted copies found ({args.copies} per kind and folder; {', '.join(sets)}):\n")
        print(format_table(headers, rows))
    print(f"\n{load_average()}")


if __name__ == "__main__":
    run(main)
