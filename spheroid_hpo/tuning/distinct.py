"""A sampler that never proposes a point the study already holds, seeded afresh for every trial.

Seeding a worker's sampler once (the study's seed plus the worker's index) made every
relaunch replay the last one: `launch` numbers its workers from 0 each time, so during the
random start-up phase a resumed or extended study proposed exactly the points it had already
trained (issue 26: trials #1, #2 and #3 identical after three launches). Here the seed comes
from the trial's number, which the storage hands out once per study, so a relaunch, a second
launch at once and workers on other machines all draw differently; and the whole point is
drawn at the trial's start and checked against every trial of the study (finished, running,
queued, failed), drawing again on a match.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from spheroid_hpo.tuning import records

log = logging.getLogger("spheroid_hpo.tuning.distinct")

# Draws from the study's own sampler before falling back to uniform random draws: a model-based
# sampler (TPE after its start-up trials, GP) may keep proposing its favourite point.
SAMPLER_DRAWS = 20
RANDOM_DRAWS = 200


def trial_seed(seed: int, trial_number: int) -> int:
    """The sampler seed of trial ``trial_number`` of a study whose file says ``seed``.

    SeedSequence mixes the two, so (seed 0, trial 1) and (seed 1, trial 0) do not share a stream.
    """
    return int(np.random.SeedSequence([seed, trial_number]).generate_state(1)[0])


class DistinctSampler(BaseSampler):
    """Draws each trial's whole point with a sampler built for that trial, and draws again while
    the point equals one a trial of the study already has.

    ``build(seed)`` makes the study file's sampler; ``space`` is every searched parameter of
    the architecture, as ``suggest_params`` asks for them. Queued trials (the baseline, retries,
    resumed ones) keep their fixed parameters: Optuna gives those before asking a sampler.
    """

    def __init__(self, build: Callable[[int], BaseSampler], *, seed: int, space: Mapping[str, BaseDistribution]):
        self._build = build
        self._seed = seed
        self._space = dict(space)
        self._base = build(seed)

    @property
    def base(self) -> BaseSampler:
        """The study file's sampler, as built for the current trial."""
        return self._base

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Build the study file's sampler anew, seeded by the trial's number."""
        self._base = self._build(trial_seed(self._seed, trial.number))
        self._base.before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """Every searched parameter: drawn together at the trial's start, so the point can be checked whole."""
        return dict(self._space)

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict:
        """A point no other trial of the study has, drawn by the study file's sampler (then at random)."""
        if not search_space:
            return {}
        names = sorted(search_space)
        taken = {tuple(params.get(name) for name in names) for other in study.get_trials(deepcopy=False)
                 if other.number != trial.number and (params := records.planned_params(other))}
        point: dict = {}
        fallback = RandomSampler(seed=trial_seed(self._seed, trial.number))
        for draw in range(SAMPLER_DRAWS + RANDOM_DRAWS):
            sampler = self._base if draw < SAMPLER_DRAWS else fallback
            point = self._draw(sampler, study, trial, search_space)
            if tuple(point.get(name) for name in names) not in taken:
                return point
        log.warning("trial %d: every point drawn (%d) was already tried; the search space looks used up, "
                    "so this trial repeats one", trial.number, SAMPLER_DRAWS + RANDOM_DRAWS)
        return point

    def _draw(self, sampler: BaseSampler, study: Study, trial: FrozenTrial,
              search_space: dict[str, BaseDistribution]) -> dict:
        own = {name: distribution for name, distribution in sampler.infer_relative_search_space(study, trial).items()
               if search_space.get(name) == distribution}
        point = dict(sampler.sample_relative(study, trial, own)) if own else {}
        for name, distribution in search_space.items():
            if name not in point:
                point[name] = sampler.sample_independent(study, trial, name, distribution)
        return point

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution):
        """The study file's sampler's draw, for a parameter outside the searched space."""
        return self._base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values) -> None:
        """Passed on to the study file's sampler."""
        self._base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Passed on to the study file's sampler (Optuna calls it in each thread of ``n_jobs``)."""
        self._base.reseed_rng()

