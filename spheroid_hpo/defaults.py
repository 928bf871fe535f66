"""Defaults shared by several layers, each defined here once, and the one precedence rule
(light imports only: the CLI reads them cheaply). Settings with a schema of their own declare
their defaults on their dataclass (``data.SplitSpec``, ``training.settings.TrainingSettings``,
the study file's tables)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TypeVar

_Settings = TypeVar("_Settings")


def given_over(settings: _Settings, **given: object) -> _Settings:
    """The one precedence rule, command line > file > default: ``settings`` (a frozen dataclass read
    from a file, its defaults filled in) with each value given on the command line (not None) in place."""
    return dataclasses.replace(settings, **{name: value for name, value in given.items() if value is not None})

RUNS_DIR = Path("runs")  # studies, demo data, reports and run folders, relative to the working directory
IMAGE_SIZE = 224  # images are resized once to this square size (the nets' ImageNet input)
# The sizes an image may be resized to, wherever one is given (a study file, best.toml, `train`, a
# model.pt): every architecture needs at least 16 px, and beyond 2048 px a decoded split would not
# fit in memory (100 images at 2048 px are 2.5 GB in float16).
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 2048
SPLIT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test
SPLIT_SEED = 0
NEAR_DUPLICATES = "together"  # near-duplicate images share a split (data._split_spec.NEAR_DUPLICATE_POLICIES)
# The generated demo data set, used when a study or `train` names no data folder.
DEMO_SETTINGS = {"per_class": 40, "size": 64, "seed": 0}
# A SLURM array job's workers (`spheroid-hpo slurm`): CPU cores each task asks for (its training
# threads), and how long before its time limit a task is sent SIGTERM to stop its trial cleanly.
SLURM_CPUS_PER_TASK = 4
SLURM_SIGNAL_GRACE_S = 120
# `launch --workers`: above the CPU cores a warning (they share the cores); above this many per core
# a refusal, since each worker is a process of about 300 MB that decodes the data set once and
# holds at least one thread (the review started 1000 on 2 cores, and hit the process limit).
MAX_WORKERS_PER_CORE = 4
# `audit-labels`: folds of train+val retrained for out-of-sample probabilities, and suspects shown as thumbnails.
AUDIT_FOLDS = 5
AUDIT_PAGE_SUSPECTS = 60
