"""The audit's rule for which images are suspects: cleanlab's, with the options the audit chose.

Fast: no training, probabilities made up. The slow tests in test_audit_labels.py check the
rule on real out-of-sample probabilities (planted flips in demo data made like ci.toml's).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from cleanlab.filter import find_label_issues

from spheroid_hpo.results.audit import HeldOut, find_suspects


def made_up_held_out(*, images: int = 200, classes: int = 4, flipped: int = 10, seed: int = 0) -> HeldOut:
    """A model right on 9 in 10 images of ``classes`` balanced classes, ``flipped`` given labels moved one class on."""
    rng = np.random.default_rng(seed)
    true = np.arange(images) % classes
    logits = rng.normal(0.0, 1.0, (images, classes))
    logits[np.arange(images), true] += 2.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = true.copy()
    moved = rng.choice(images, flipped, replace=False)
    labels[moved] = (labels[moved] + 1) % classes
    return HeldOut(paths=tuple(f"c{k}/{i}.png" for i, k in enumerate(labels)), splits=("train",) * images,
                   labels=labels, probabilities=probabilities, fold_of=np.arange(images) % 5,
                   class_names=tuple(f"c{k}" for k in range(classes)), images=torch.zeros(images, 3, 2, 2),
                   folds=5, seconds=0.0)


def test_suspects_are_cleanlabs_low_self_confidence_filter_ranked_by_self_confidence():
    held_out = made_up_held_out()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen = find_label_issues(held_out.labels, held_out.probabilities, filter_by="low_self_confidence",
                                   return_indices_ranked_by="self_confidence", n_jobs=1)
        default = find_label_issues(held_out.labels, held_out.probabilities,
                                    return_indices_ranked_by="self_confidence", n_jobs=1)
    assert len(chosen) != len(default)  # these made-up probabilities tell the two rules apart
    suspects = find_suspects(held_out)
    assert [s.index for s in suspects] == chosen.tolist()
    assert [s.rank for s in suspects] == list(range(1, len(suspects) + 1))
    given = [s.given_probability for s in suspects]
    assert given == sorted(given)  # the given label's probability, lowest first
