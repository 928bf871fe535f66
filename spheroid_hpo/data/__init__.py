"""Labelled microscopy images in, train/val/test tensors out.

Layout: ``ROOT/<class name>/<image>`` (images may sit in subfolders of a class folder).
``load_dataset`` scans the folder, makes (or reuses) a stratified split recorded in a manifest
CSV, and decodes each image once into float16 tensors kept in memory for the whole run.
``check_data`` reports what a folder holds (formats, duplicates, imbalance) before any training;
``data.demo`` writes a synthetic data set in the paper's four classes.

This file only re-exports the public names of the private modules, and does so lazily
(PEP 562): reading a study file or a data record loads no PyTorch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "_check": ("IMBALANCE_WARNING_RATIO", "DataCheck", "check_data"),
    "_dataset": ("Dataset", "SplitPlan", "SplitTensors", "load_dataset", "prepare_split"),
    "_duplicates": ("Duplicates", "find_duplicates", "straddling"),
    "_folder": ("DataFolder", "LabeledFile", "find_images", "is_image_name", "scan_folder"),
    "_folds": ("TrainingData", "training_data"),
    "_formats": ("IMAGE_SUFFIXES", "ImageInfo", "UnreadableImage", "inspect_image", "read_image"),
    "_groups": ("groups_from_csv", "groups_from_regex"),
    "_manifest": ("DEFAULT_MANIFEST_NAME", "ManifestRow", "content_digest", "manifest_fingerprint", "read_manifest",
                  "write_manifest"),
    "_source": ("DataSource", "data_folder", "load_recorded_dataset", "write_manifest_text"),
    "_split": ("FRACTIONS_RULE", "SPLIT_NAMES", "assign_folds", "assign_splits", "check_fold_count",
               "check_fold_number", "validate_fractions"),
    "_split_spec": ("DEFAULT_SPLIT", "NEAR_DUPLICATE_POLICIES", "SPLIT_KEYS", "SplitSpec", "parse_fractions"),
    "_tensors": ("decode_images", "rotate_batch", "validate_image_size"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    """Import the private module that defines ``name`` on first use."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
