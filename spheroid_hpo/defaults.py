"""Defaults shared by several layers, each defined here once (no imports: the CLI reads them cheaply)."""

from __future__ import annotations

from pathlib import Path

RUNS_DIR = Path("runs")  # studies, demo data, reports and run folders, relative to the working directory
IMAGE_SIZE = 224  # images are resized once to this square size (the nets' ImageNet input)
# The sizes an image may be resized to, wherever one is given (a study file, best.toml, `train`, a
# model.pt): every architecture needs at least 16 px, and beyond 2048 px a decoded split would not
# fit in memory (100 images at 2048 px are 2.5 GB in float16).
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 2048
SPLIT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test
# The generated demo data set, used when a study or `train` names no data folder.
DEMO_SETTINGS = {"per_class": 40, "size": 64, "seed": 0}
# `audit-labels`: folds of train+val retrained for out-of-sample probabilities, and suspects shown as thumbnails.
AUDIT_FOLDS = 5
AUDIT_PAGE_SUSPECTS = 60
