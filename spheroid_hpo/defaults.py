"""Defaults shared by several layers, each defined here once (no imports: the CLI reads them cheaply)."""

from __future__ import annotations

from pathlib import Path

RUNS_DIR = Path("runs")  # studies, demo data, reports and run folders, relative to the working directory
IMAGE_SIZE = 224  # images are resized once to this square size (the nets' ImageNet input)
SPLIT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test
# The generated demo data set, used when a study or `train` names no data folder.
DEMO_SETTINGS = {"per_class": 40, "size": 64, "seed": 0}
