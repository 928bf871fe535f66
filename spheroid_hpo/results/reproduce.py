"""Retraining the winner: ``export_best`` records how it retrains, ``reproduce`` checks that it still does.

Exact float equality across hardware is not something PyTorch offers: another CPU
(other vector kernels), another thread count, GPU or driver changes the order of
floating-point work, and training then drifts like a run with another seed. So
``export_best`` retrains the winning configuration with K seeds and records the
spread of the scores with the machine's fingerprint, and ``reproduce`` decides by
the rule in ``best_config.RULE_TEXT``: exact on an identical machine, within a
band derived from the recorded spread anywhere else. A trainer that learns less
(a learning rate off by 1000, one epoch, shuffled labels) lands far outside it.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from spheroid_hpo.data import DEFAULT_MANIFEST_NAME, SplitSpec, data_folder, prepare_split
from spheroid_hpo.defaults import RUNS_DIR
from spheroid_hpo.errors import InputError
from spheroid_hpo.results.artifacts import download_model
from spheroid_hpo.results.best_file import (
    DEFAULT_SEEDS,
    MIN_BAND,
    RULE_TEXT,
    BestConfig,
    SeedScores,
    Z,
    read_best_config,
)
from spheroid_hpo.results.family import open_family
from spheroid_hpo.results.report import evaluate_on_test
from spheroid_hpo.training.device import resolve_device, resolved_precision
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.machine import MachineFingerprint, machine_fingerprint
from spheroid_hpo.training.run import run_training
from spheroid_hpo.tuning.records import RunRecord
from spheroid_hpo.tuning.storage import open_artifact_store

Log = Callable[[str], None]


@dataclass(frozen=True)
class SeedRun:
    """The scores of one retraining."""

    seed: int
    val_macro_f1: float
    test_macro_f1: float
    seconds: float


def export_best(
    *,
    study: str | None,
    storage_url: str | None = None,
    artifact_dir: Path | None = None,
    runs_dir: Path = RUNS_DIR,
    data_dir: Path | None = None,
    seeds: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    log: Log | None = None,
) -> BestConfig:
    """The best trial of study ``study`` as a ``BestConfig``, retrained with ``seeds`` seeds on this machine.

    The trial's own model is scored once on the test split (its ``original``
    scores). ``threads`` is the CPU thread count the trial trained with, used when
    the trial did not record it; the retrainings use the same count.
    """
    seeds = DEFAULT_SEEDS if seeds is None else seeds
    if seeds < 2:
        raise InputError(f"--seeds must be at least 2 (a spread needs two retrainings), but got {seeds=}")
    log = log or _stderr
    runs_dir = Path(runs_dir)
    family = open_family(storage_url=storage_url, study=study, runs_dir=runs_dir)
    best = family.best_overall()
    if best is None:
        raise InputError(
            f"study {family.name} has no completed trial yet; run `spheroid-hpo launch --study "
            f"studies/{family.name}.toml` until one completes"
        )
    architecture, trial = best
    config = family.config
    artifact_dir = family.workspace(runs_dir=runs_dir, artifact_dir=artifact_dir).existing_artifacts()
    threads = RunRecord.of(trial).torch_threads or threads or torch.get_num_threads()
    torch_device = resolve_device(device)

    folder = family.data_folder(data_dir=data_dir, runs_dir=runs_dir)
    with tempfile.TemporaryDirectory(prefix="spheroid-hpo-export-") as scratch:
        scratch = Path(scratch)
        dataset = family.load_data(folder, manifest_path=scratch / DEFAULT_MANIFEST_NAME)
        model = download_model(trial, artifact_store=open_artifact_store(artifact_dir), artifact_dir=artifact_dir,
                               study_name=config.study_name(architecture), folder=scratch)
        # What the trial trained in ("auto" resolved on its worker); best.toml records that, so every
        # reproduction trains in it whatever "auto" would pick on its own machine.
        precision = (RunRecord.of(trial).precision
                     or resolved_precision(config.training.precision, torch_device, model=model))
        original_test = evaluate_on_test(
            model, architecture=architecture, trial_number=trial.number, test=dataset.test,
            class_names=dataset.class_names, precision=precision, device=torch_device,
        ).metrics.macro_f1
        unscored = SeedScores(per_seed=(), original=0.0)
        best = BestConfig(
            study=family.name, architecture=architecture, trial=trial.number, params=family.params(trial, architecture),
            image_size=family.data.image_size, precision=precision,
            weights=config.training.weights, data_path=family.data.path,
            demo=dict(family.data.demo) if family.data.path is None else None,
            split=config.data.split,
            cv_folds=config.data.cv_folds, fingerprint=family.data.fingerprint,
            machine=machine_fingerprint(torch_device, threads=threads, precision=precision),
            seeds=tuple(range(config.training.seed, config.training.seed + seeds)), val=unscored, test=unscored,
        )
        split_manifest = _drawn_split(best, folder, scratch / "drawn.csv", source=f"study {family.name}")
        runs = [_retrain(best, seed=seed, folder=folder, manifest=split_manifest, device=torch_device, threads=threads,
                         out_dir=scratch / f"seed-{seed}", log=log) for seed in best.seeds]
    return replace(
        best,
        val=SeedScores(per_seed=tuple(run.val_macro_f1 for run in runs), original=float(trial.value)),
        test=SeedScores(per_seed=tuple(run.test_macro_f1 for run in runs), original=original_test),
    )


@dataclass(frozen=True)
class ScoreCheck:
    """One score of a reproduction: what was recorded for the retrained seeds, what came out, the band."""

    name: str
    expected: float  # recorded mean over the retrained seeds (or the one recorded value, for the exact rule)
    obtained: float
    half_width: float  # 0 for the exact rule
    per_seed: tuple[float, ...]

    @property
    def passed(self) -> bool:
        """Whether the obtained score meets the rule."""
        # The tiny slack only absorbs the decimal rounding of a hand-edited file.
        return abs(self.obtained - self.expected) <= self.half_width + 1e-12


@dataclass(frozen=True)
class ReproduceResult:
    """The outcome of ``reproduce``: which rule applied, why, and each score against its expectation."""

    config: BestConfig
    here: MachineFingerprint
    rule: str  # "exact" or "band"
    why: str
    checks: tuple[ScoreCheck, ...]
    seeds: tuple[int, ...]
    seconds: float
    out_dir: Path | None

    @property
    def reproduced(self) -> bool:
        """Whether every score met the rule."""
        return all(check.passed for check in self.checks)

    def format_table(self) -> str:
        """Expected and obtained scores side by side, the rule applied and the verdict."""
        c = self.config
        lines = [
            f"retrained {c.architecture} (trial {c.trial} of study {c.study}) with seed(s) "
            f"{', '.join(map(str, self.seeds))} in {self.seconds:.0f} s",
            f"recorded on: {c.machine.describe()}",
            f"this run:    {self.here.describe()}",
            f"rule: {self.rule}: {self.why}",
        ]
        if self.rule == "exact":
            lines.append(f"{'':<15}{'expected':>10}{'obtained':>10}{'difference':>12}")
            lines += [f"{check.name:<15}{check.expected:>10.4f}{check.obtained:>10.4f}"
                      f"{check.obtained - check.expected:>+12.4f}" for check in self.checks]
        else:
            lines.append(f"{'':<15}{'expected mean':>14}{'band':>18}{'obtained mean':>15}   per seed")
            for check in self.checks:
                band = f"[{check.expected - check.half_width:.4f}, {check.expected + check.half_width:.4f}]"
                lines.append(f"{check.name:<15}{check.expected:>14.4f}{band:>18}{check.obtained:>15.4f}   "
                             f"{' '.join(f'{v:.3f}' for v in check.per_seed)}")
        if self.reproduced:
            lines.append("reproduced: " + ("the scores are exactly the recorded ones" if self.rule == "exact"
                                           else "every mean lies within its band"))
        else:
            outside = ", ".join(check.name for check in self.checks if not check.passed)
            lines.append(f"NOT reproduced: {outside} outside " + ("the exact values" if self.rule == "exact"
                                                                    else "its band"))
        return "\n".join(lines)


def reproduce(
    *,
    path: Path,
    data_dir: Path | None = None,
    runs_dir: Path = RUNS_DIR,
    out_dir: Path | None = None,
    device: str | None = None,
    seeds: int | None = None,
    threads: int | None = None,
    log: Log | None = None,
) -> ReproduceResult:
    """Retrain the configuration in ``path`` (a best.toml) on its split and decide by the recorded rule.

    ``device`` defaults to the kind the seeds were recorded on (CPU when that is
    not here); ``threads`` to the recorded thread count; ``seeds`` to all recorded
    seeds for the band rule (the first ``seeds`` of them otherwise).
    """
    config = read_best_config(path)
    if seeds is not None and not 1 <= seeds <= len(config.seeds):
        raise InputError(f"--seeds must be between 1 and the {len(config.seeds)} seeds {path} records, "
                         f"but got {seeds=}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, but got {threads=}")
    log = log or _stderr
    started = time.perf_counter()
    if device is None:
        device = "cuda" if config.machine.device == "cuda" and torch.cuda.is_available() else "cpu"
    torch_device = resolve_device(device)
    _check_threads(threads, recorded=config.machine.threads, path=path)
    threads = threads or config.machine.threads
    here = machine_fingerprint(torch_device, threads=threads, precision=config.precision)
    differences = config.machine.differences(here)
    folder = data_folder(config.data_path, demo=config.demo, data_dir=data_dir, runs_dir=Path(runs_dir),
                         owner="the configuration")
    with tempfile.TemporaryDirectory(prefix="spheroid-hpo-reproduce-") as scratch:
        scratch = Path(scratch)
        manifest = _drawn_split(config, folder, scratch / DEFAULT_MANIFEST_NAME, source=str(path))

        def retrain(seed: int, keep: bool) -> SeedRun:
            run_dir = Path(out_dir) if keep and out_dir is not None else scratch / f"seed-{seed}"
            return _retrain(config, seed=seed, folder=folder, manifest=manifest, device=torch_device, threads=threads,
                            out_dir=run_dir, log=log)

        runs: dict[int, SeedRun] = {}
        if not differences:
            runs[config.seed] = retrain(config.seed, keep=True)
            exact = _exact_checks(config, runs[config.seed])
            if all(check.passed for check in exact):
                return ReproduceResult(
                    config=config, here=here, rule="exact", checks=exact, seeds=(config.seed,),
                    why=f"this machine matches the recorded fingerprint, so seed {config.seed} must give exactly "
                        f"its recorded scores", seconds=time.perf_counter() - started,
                    out_dir=Path(out_dir) if out_dir is not None else None,
                )
            why = (f"the fingerprint matches but seed {config.seed} did not give exactly its recorded scores "
                   f"(val {runs[config.seed].val_macro_f1:.4f}, test {runs[config.seed].test_macro_f1:.4f})")
        else:
            why = f"the fingerprint differs ({'; '.join(differences)})"
        chosen = config.seeds[:seeds or len(config.seeds)]
        for seed in chosen:
            if seed not in runs:
                runs[seed] = retrain(seed, keep=seed == config.seed)
    checks = _band_checks(config, [runs[seed] for seed in chosen])
    why += (f", so {len(chosen)} seed(s) were retrained and each mean must lie within the recorded mean "
            f"+- max({_rule_formula()})")
    return ReproduceResult(config=config, here=here, rule="band", why=why, checks=checks, seeds=chosen,
                           seconds=time.perf_counter() - started,
                           out_dir=Path(out_dir) if out_dir is not None else None)


def _rule_formula() -> str:
    return f"{Z:g} * sd * sqrt(2 / n), {MIN_BAND:g}"


def _exact_checks(config: BestConfig, run: SeedRun) -> tuple[ScoreCheck, ...]:
    index = config.seeds.index(run.seed)
    return tuple(
        ScoreCheck(name=label, expected=scores.per_seed[index], obtained=obtained, half_width=0.0,
                   per_seed=(obtained,))
        for label, scores, obtained in (("val macro-F1", config.val, run.val_macro_f1),
                                        ("test macro-F1", config.test, run.test_macro_f1))
    )


def _band_checks(config: BestConfig, runs: list[SeedRun]) -> tuple[ScoreCheck, ...]:
    indexes = [config.seeds.index(run.seed) for run in runs]
    checks = []
    for label, scores, attribute in (("val macro-F1", config.val, "val_macro_f1"),
                                     ("test macro-F1", config.test, "test_macro_f1")):
        obtained = tuple(getattr(run, attribute) for run in runs)
        checks.append(ScoreCheck(
            name=label, expected=statistics.fmean(scores.per_seed[i] for i in indexes),
            obtained=statistics.fmean(obtained), half_width=scores.half_width(len(runs)), per_seed=obtained,
        ))
    return tuple(checks)


def _retrain(config: BestConfig, *, seed: int, folder: Path, manifest: Path, device: torch.device, threads: int,
             out_dir: Path, log: Log) -> SeedRun:
    """Train the configuration once with ``seed`` on the recorded split, with ``threads`` CPU threads,
    as its trial trained: with its folds when it was cross-validated (its value then the mean over
    them, its test score the last fold's model's)."""
    started = time.perf_counter()
    with _torch_threads(threads if device.type == "cpu" else None):
        result = run_training(
            data_dir=folder, out_dir=out_dir, arch=config.architecture,
            hyperparams=Hyperparams.from_params(config.params),
            image_size=config.image_size, seed=seed, device=str(device), weights=config.weights,
            precision=config.precision, split=SplitSpec(seed=config.split.seed, manifest=str(manifest)),
            cv_folds=config.cv_folds, progress=False,
        )
    run = SeedRun(seed=seed, val_macro_f1=result.val_macro_f1, test_macro_f1=result.test_macro_f1,
                  seconds=time.perf_counter() - started)
    over = f"mean val macro-F1 over {config.cv_folds} folds" if config.cv_folds else "val macro-F1"
    log(f"seed {seed}: {over} {run.val_macro_f1:.4f}, test macro-F1 {run.test_macro_f1:.4f} ({run.seconds:.0f} s)")
    return run


def _drawn_split(config: BestConfig, folder: Path, manifest: Path, *, source: str) -> Path:
    """Draw the recorded split afresh into ``manifest`` and refuse data whose fingerprint differs."""
    spec = config.split if config.split.manifest is not None else replace(config.split, manifest=str(manifest))
    split = prepare_split(folder, spec)
    if split.fingerprint != config.fingerprint:
        raise InputError(
            f"the data in {folder} split with split_seed={config.split.seed} differs from the data {source} "
            f"was found on (fingerprint {split.fingerprint[:12]} != {config.fingerprint[:12]}); pass --data with "
            f"the same images"
        )
    return split.manifest_path


def _check_threads(threads: int | None, *, recorded: int, path: Path) -> None:
    """At most one thread per core: best.toml [machine] threads = 100000 ended in a segfault."""
    cores = os.cpu_count() or 1
    if (threads or recorded) > cores:
        where = f"--threads {threads}" if threads else f"{path} records [machine] threads = {recorded}"
        raise InputError(f"{where}, more than the {cores} CPU cores here; pass --threads {cores} or fewer "
                         f"(the run is then compared as one on another machine)")


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """Train with the recorded CPU thread count, and give the process its own back afterwards."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = ["RULE_TEXT", "ReproduceResult", "ScoreCheck", "SeedRun", "export_best", "reproduce"]
