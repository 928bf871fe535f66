"""Each architecture's best configuration trained again with K seeds, scored on the test split.

One run is one draw of initialisation, shuffling and rotations; the spread over
seeds says how much of a difference between architectures is luck. Seed i is
the study's training seed plus i for every architecture, on the study's split,
so the runs pair up by seed.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from optuna.trial import FrozenTrial

from spheroid_hpo.data import SplitSpec
from spheroid_hpo.results.family import StudyFamily
from spheroid_hpo.results.report._paired import PairedComparison, paired_comparison
from spheroid_hpo.training.run import run_training


@dataclass(frozen=True)
class RepeatedRuns:
    architecture: str
    trial_number: int
    seeds: tuple[int, ...]
    test_macro_f1: tuple[float, ...]
    val_macro_f1: tuple[float, ...]
    histories: tuple[list[dict], ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.test_macro_f1))

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds; None with a single run."""
        return float(np.std(self.test_macro_f1, ddof=1)) if len(self.test_macro_f1) > 1 else None


def repeat_best(
    family: StudyFamily,
    best: Mapping[str, FrozenTrial],
    *,
    data_dir: Path,
    manifest_path: Path,
    repeats: int,
    device: str,
    on_run: Callable[[str, int], None] | None = None,
) -> dict[str, RepeatedRuns]:
    """Train each architecture's best configuration ``repeats`` times, seeds training.seed + 0..K-1,
    on the study's split and as its trials trained (the whole recorded configuration, class weights
    included, and the study's folds when it is cross-validated)."""
    training, data = family.config.training, family.config.data
    seeds = tuple(training.seed + index for index in range(repeats))
    results = {}
    with tempfile.TemporaryDirectory(prefix="spheroid-hpo-repeats-") as scratch:
        for architecture, trial in best.items():
            runs = []
            for seed in seeds:
                if on_run is not None:
                    on_run(architecture, seed)
                runs.append(run_training(
                    data_dir=data_dir, out_dir=Path(scratch) / architecture / f"seed-{seed}", arch=architecture,
                    hyperparams=family.hyperparams(trial),
                    image_size=family.data.image_size, seed=seed, device=device, weights=training.weights,
                    precision=training.precision, split=SplitSpec(seed=data.split.seed, manifest=str(manifest_path)),
                    cv_folds=data.cv_folds, progress=False,
                ))
            results[architecture] = RepeatedRuns(
                architecture=architecture,
                trial_number=trial.number,
                seeds=seeds,
                test_macro_f1=tuple(run.test_macro_f1 for run in runs),
                # As a trial's value: the last epoch's validation score from the training loop (mean over folds).
                val_macro_f1=tuple(run.val_macro_f1 for run in runs),
                histories=tuple(list(run.history) for run in runs),
            )
    return results


def compare_architectures(repeated: Mapping[str, RepeatedRuns]) -> list[PairedComparison]:
    """Every pair of architectures, paired by seed (the first in study-file order minus the second)."""
    return [
        paired_comparison(a, repeated[a].test_macro_f1, b, repeated[b].test_macro_f1)
        for a, b in itertools.combinations(repeated, 2)
    ]
