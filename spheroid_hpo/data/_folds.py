"""What a training run trains and validates on: the manifest's train and val splits, or the folds of both.

With cross-validation (``[data] cv_folds = K``) train+val is cut into K stratified folds,
with the manifest's groups and every set of duplicates kept in one fold; each fold is
validated on once by a model trained on the others. The folds depend only on the files
and the split seed, so they repeat on any machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from spheroid_hpo.data._dataset import Dataset, SplitTensors
from spheroid_hpo.data._folder import LabeledFile
from spheroid_hpo.data._manifest import read_manifest
from spheroid_hpo.data._split import assign_folds

__all__ = ["TrainingData", "training_data"]


@dataclass(frozen=True)
class TrainingData:
    """The train and validation images of a study (decoded once per worker), and their folds."""

    train: SplitTensors
    val: SplitTensors
    class_names: tuple[str, ...]
    image_size: int
    # With cross-validation: the fold (0 .. K-1) of each image of train + val, in that order.
    folds: tuple[int, ...] = ()

    def runs(self) -> Iterator[tuple]:
        """(train, val) for each training run: the manifest's split, or one pair per fold of
        train + val. A generator, so only one fold's copy of the images exists at a time."""
        if not self.folds:
            yield self.train, self.val
            return
        images = torch.cat([self.train.images, self.val.images])
        labels = torch.cat([self.train.labels, self.val.labels])
        paths = self.train.paths + self.val.paths
        fold_of = torch.tensor(self.folds, device=labels.device)
        for fold in range(max(self.folds) + 1):
            yield tuple(
                SplitTensors(images=images[mask], labels=labels[mask],
                             paths=tuple(p for p, keep in zip(paths, mask.tolist()) if keep))
                for mask in (fold_of != fold, fold_of == fold)
            )


def training_data(dataset: Dataset, *, manifest: Path, cv_folds: int | None, split_seed: int) -> TrainingData:
    """The manifest's train and val splits of ``dataset`` (a ``Dataset``) and, with ``cv_folds``,
    the fold of each of their images."""
    folds: tuple[int, ...] = ()
    if cv_folds is not None:
        group_of = {row.path: row.group for row in read_manifest(manifest)}
        files = [LabeledFile(path, int(label)) for split in (dataset.train, dataset.val)
                 for path, label in zip(split.paths, split.labels.tolist())]
        folds = tuple(assign_folds(
            files, folds=cv_folds, seed=split_seed,
            groups=[group_of.get(file.path) for file in files], together=dataset.duplicates.groups(near=True),
        ))
    return TrainingData(train=dataset.train, val=dataset.val, class_names=dataset.class_names,
                        image_size=dataset.image_size, folds=folds)
