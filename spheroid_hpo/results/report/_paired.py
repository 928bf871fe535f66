"""Paired comparison of two architectures trained with the same seeds on the same split.

Seed i of one architecture and seed i of the other share the split and the
random stream, so their difference is one paired observation. Two tests:
the exact sign-flip permutation test (no distributional assumption; computed
here), and the paired t-test from scipy when it is installed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_EXACT_MAX_PAIRS = 16  # 2**16 sign patterns enumerate in milliseconds
_MONTE_CARLO_SAMPLES = 100_000
_CHUNK = 10_000


@dataclass(frozen=True)
class PairedComparison:
    first: str
    second: str
    n: int
    mean_difference: float  # first minus second
    sd_difference: float | None  # sample standard deviation (ddof=1); None with one pair
    permutation_p_value: float  # two-sided sign-flip test
    t_test_p_value: float | None  # two-sided paired t-test; None without scipy, or when undefined


def paired_comparison(
    first: str, first_scores: Sequence[float], second: str, second_scores: Sequence[float]
) -> PairedComparison:
    """Compare ``first`` against ``second`` on scores paired by position (seed)."""
    a, b = np.asarray(first_scores, dtype=np.float64), np.asarray(second_scores, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired scores need the same, non-zero length; got {a.size} and {b.size}")
    differences = a - b
    return PairedComparison(
        first=first,
        second=second,
        n=int(differences.size),
        mean_difference=float(differences.mean()),
        sd_difference=float(differences.std(ddof=1)) if differences.size > 1 else None,
        permutation_p_value=sign_flip_p_value(differences),
        t_test_p_value=_paired_t_test(a, b),
    )


def sign_flip_p_value(differences: Sequence[float], *, seed: int = 0) -> float:
    """Two-sided p-value of the paired permutation test of "mean difference is 0".

    Under the null each difference is as likely positive as negative; the p-value is
    the share of sign patterns whose |mean| reaches the observed one. Exact for up to
    16 pairs, a seeded Monte Carlo estimate beyond.
    """
    d = np.asarray(differences, dtype=np.float64)
    observed = abs(d.mean())
    # Differences are scores of a few hundred images: compare with a tolerance, not bit for bit.
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max(initial=0.0)))
    if d.size <= _EXACT_MAX_PAIRS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        means = np.abs(signs @ d) / d.size
        return float(np.mean(means >= observed - tolerance))
    rng = np.random.default_rng(seed)
    reached = 0
    for _ in range(_MONTE_CARLO_SAMPLES // _CHUNK):
        signs = rng.choice((1.0, -1.0), size=(_CHUNK, d.size))
        reached += int(np.sum(np.abs(signs @ d) / d.size >= observed - tolerance))
    # Counting the observed pattern itself keeps the estimate a valid p-value (never 0).
    return float((reached + 1) / (_MONTE_CARLO_SAMPLES + 1))


def _paired_t_test(a: np.ndarray, b: np.ndarray) -> float | None:
    try:
        from scipy import stats
    except ImportError:
        return None
    differences = a - b
    if a.size < 2 or np.allclose(differences, differences[0]):
        return None  # zero variance: the t statistic is undefined
    p_value = float(stats.ttest_rel(a, b).pvalue)
    return None if math.isnan(p_value) else p_value
