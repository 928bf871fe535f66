"""What a search strategy buys: compute until a good configuration is found, against random search.

One fixed CPU-sized task (``benchmarks/search_task.toml``: quickstart.toml's search space,
sampler and pruner on smaller demo data, SqueezeNet 1.1; or any study file's demo data, search
space and baseline trial, for one architecture) is searched by several strategies, each over several sampler seeds:

- **random, no pruning**: the baseline every ratio is against;
- **the study file's own sampler and pruner** (the shipped default pair);
- TPE without pruning and GP without pruning, and any ``--method SAMPLER:PRUNER`` added.

Every run is the product's own trial: ``tuning.objective.build_objective`` (what each worker
runs), the samplers and pruners the study file names (``tuning.studies.build_sampler`` and
``build_pruner``), the paper's configuration enqueued first, on in-memory storage in this
process. The training seed is the study file's, as in a launch, so two runs differ only by
what their strategy proposes and stops.

For each run: the epochs (and seconds) trained until the best validation macro-F1 so far
comes within ``--tolerance`` (0.02) of the best any run of any strategy found, the final
best, and the epochs in all. The summary gives per strategy the median over seeds of the
epochs to that target, its ratio to random search, how many seeds reached it, the mean final
best and the epochs saved against the same sampler without pruning.

    python benchmarks/search_efficiency.py --jobs 2     # benchmarks/search_task.toml, 5 seeds, ~20 min on 2 cores
    python benchmarks/search_efficiency.py --seeds 0 1 2 3 4 5 6 7 --n-trials 24
    python benchmarks/search_efficiency.py --method tpe:median --pruner-option n_warmup_steps=8
    python benchmarks/search_efficiency.py --smoke                  # one seed, two tiny trials: does it run
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from _common import describe_machine, format_table, load_average, run
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from spheroid_hpo.data import TrainingData, load_dataset
from spheroid_hpo.data.demo import write_demo_data
from spheroid_hpo.training.architectures import applicable_params
from spheroid_hpo.tuning import records
from spheroid_hpo.tuning.objective import build_objective
from spheroid_hpo.tuning.search_space import param_distributions
from spheroid_hpo.tuning.studies import build_pruner, build_sampler
from spheroid_hpo.tuning.study_file import PrunerConfig, SamplerConfig, StudyConfig, load_study_config

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "random:none"


@dataclass(frozen=True)
class Trial:
    epochs: int
    seconds: float
    value: float | None  # None: pruned or failed (a pruned trial never becomes the best)


@dataclass(frozen=True)
class Run:
    method: str
    seed: int
    trials: tuple[Trial, ...]

    def best(self) -> float:
        return max((t.value for t in self.trials if t.value is not None), default=0.0)

    def epochs(self) -> int:
        return sum(t.epochs for t in self.trials)

    def cost_to(self, target: float) -> tuple[int, float] | None:
        """(epochs, seconds) trained until a completed trial scored at least ``target``; None if none did."""
        epochs, seconds = 0, 0.0
        for trial in self.trials:
            epochs += trial.epochs
            seconds += trial.seconds
            if trial.value is not None and trial.value >= target:
                return epochs, seconds
        return None


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.threads)
    config = load_study_config(args.study, n_trials=args.n_trials)
    architecture = args.arch or config.architectures[-1]
    default = f"{config.sampler.name}:{config.pruner.name}"
    methods = list(dict.fromkeys([BASELINE, default, f"{config.sampler.name}:none", "gp:none", *args.method]))
    if args.smoke:
        methods = [BASELINE, default]
    if args.only:
        methods = args.only
    print(describe_machine(torch.device("cpu")))
    print(f"{load_average()} at start")
    print(f"task: {args.study.name}, {architecture}, {config.n_trials} trials per run (the baseline first), "
          f"seeds {args.seeds}; default pair {default}; pruner options {dict(_pruner_options(args))}\n")

    # Interleaved: each seed runs every method before the next seed. With --jobs, runs go to
    # fresh (spawned) processes of --threads threads each, so seconds stay comparable across methods.
    jobs = [(method, seed) for seed in args.seeds for method in methods]
    runs = []
    if args.jobs == 1:
        for method, seed in jobs:
            runs.append(_search_job(method, seed, architecture=architecture, args=args))
            print(_run_line(runs[-1]), flush=True)
    else:
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=spawn) as pool:
            futures = [pool.submit(_search_job, method, seed, architecture=architecture, args=args)
                       for method, seed in jobs]
            for future in futures:
                runs.append(future.result())
                print(_run_line(runs[-1]), flush=True)

    best_found = max(r.best() for r in runs)
    target = best_found - args.tolerance
    print(f"\nbest validation macro-F1 of any run: {best_found:.3f}; target = {target:.3f} "
          f"(within {args.tolerance} of it)\n")
    print(format_table(
        ["strategy", "median epochs to target", "vs random", "median s to target", "seeds reaching it",
         "mean final best", "mean epochs in all", "epochs saved by pruning"],
        [_summary_row(method, runs, target) for method in methods],
    ))
    print(f"\nmedians over the seeds that reached the target; a seed that never did counts as its whole run. "
          f"{load_average()} at end")


def _search_job(method: str, seed: int, *, architecture: str, args) -> Run:
    """One run in a scratch folder of its own, on the study file's demo data (written and decoded here)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.threads)
    config = load_study_config(args.study, n_trials=args.n_trials)
    if args.smoke:  # two epochs a trial, whatever the file says
        config = dataclasses.replace(
            config, baseline={**config.baseline, "epochs": 2},
            search_space=tuple(dataclasses.replace(spec, kind="int", low=1, high=2) if spec.name == "epochs" else spec
                               for spec in config.search_space))
    with tempfile.TemporaryDirectory(prefix="spheroid-bench-") as scratch:
        data = _training_data(config, Path(scratch), smoke=args.smoke)
        return _search(config, data, architecture=architecture, method=method, seed=seed, scratch=Path(scratch),
                       args=args)


def _training_data(config: StudyConfig, scratch: Path, *, smoke: bool) -> TrainingData:
    demo = scratch / "demo"
    per_class = 8 if smoke else config.data.demo.per_class
    write_demo_data(demo, per_class=per_class, size=config.data.demo.size, seed=config.data.demo.seed)
    dataset = load_dataset(demo, image_size=config.data.image_size, split=config.data.split,
                           splits=("train", "val"))
    return TrainingData(train=dataset.train, val=dataset.val, class_names=dataset.class_names,
                        image_size=config.data.image_size)


def _search(config: StudyConfig, data: TrainingData, *, architecture: str, method: str, seed: int,
            scratch: Path, args) -> Run:
    sampler_name, pruner_name = method.split(":")
    sampler = SamplerConfig(name=sampler_name, seed=seed, n_startup_trials=config.sampler.n_startup_trials)
    pruner = dataclasses.replace(config.pruner, name=pruner_name, **_pruner_options(args))
    space = param_distributions(config.search_space, architecture=architecture)
    study = optuna.create_study(direction="maximize", sampler=build_sampler(sampler, space=space),
                                pruner=build_pruner(pruner, max_epochs=config.max_epochs))
    applies = applicable_params(architecture)
    study.enqueue_trial({name: value for name, value in config.baseline.items() if name in applies})
    folder = scratch / f"{method.replace(':', '-')}-{seed}"
    (folder / "artifacts").mkdir(parents=True)
    objective = build_objective(
        architecture=architecture, data=data, search_space=config.search_space, device=torch.device("cpu"),
        artifact_store=FileSystemArtifactStore(str(folder / "artifacts")), checkpoint_dir=folder / "checkpoints",
        precision=config.training.precision, weights=config.training.weights, seed=config.training.seed,
    )
    trials = []
    for _ in range(config.n_trials):
        started = time.perf_counter()
        study.optimize(objective, n_trials=1, catch=(Exception,))
        trial = study.trials[-1]
        trials.append(Trial(
            epochs=int(trial.user_attrs.get(records.EPOCHS_TRAINED, len(trial.intermediate_values))),
            seconds=time.perf_counter() - started,
            value=trial.value if trial.state == TrialState.COMPLETE else None,
        ))
    return Run(method=method, seed=seed, trials=tuple(trials))


def _pruner_options(args) -> dict[str, int]:
    options = {}
    for option in args.pruner_option:
        name, _, value = option.partition("=")
        if name not in {f.name for f in dataclasses.fields(PrunerConfig)} - {"name"}:
            raise SystemExit(f"--pruner-option {option!r}: no pruner setting {name!r}")
        options[name] = int(value)
    return options


def _run_line(run: Run) -> str:
    pruned = sum(t.value is None for t in run.trials)
    # Each trial as value/epochs trained ("p" for pruned), so runs printed by separate invocations
    # can be summarised together by hand.
    curve = " ".join(f"{t.value:.2f}/{t.epochs}" if t.value is not None else f"p/{t.epochs}" for t in run.trials)
    return (f"{run.method:<16} seed {run.seed}: best {run.best():.3f}, {run.epochs()} epochs, "
            f"{sum(t.seconds for t in run.trials):.0f} s, {pruned} pruned  [{curve}]")


def _summary_row(method: str, runs: Sequence[Run], target: float) -> list[str]:
    mine = [r for r in runs if r.method == method]
    costs = [r.cost_to(target) or (r.epochs(), sum(t.seconds for t in r.trials)) for r in mine]
    reached = sum(r.cost_to(target) is not None for r in mine)
    baseline = [r.cost_to(target) or (r.epochs(), sum(t.seconds for t in r.trials))
                for r in runs if r.method == BASELINE]
    epochs = statistics.median(c[0] for c in costs)
    ratio = f"{epochs / statistics.median(c[0] for c in baseline):.2f}" if baseline else "-"
    sampler = method.split(":")[0]
    unpruned = [r for r in runs if r.method == f"{sampler}:none"]
    saved = "-"
    if method.split(":")[1] != "none" and unpruned:
        saved = f"{1 - statistics.fmean(r.epochs() for r in mine) / statistics.fmean(r.epochs() for r in unpruned):.0%}"
    return [
        method, f"{epochs:.0f}", ratio, f"{statistics.median(c[1] for c in costs):.0f}",
        f"{reached}/{len(mine)}", f"{statistics.fmean(r.best() for r in mine):.3f}",
        f"{statistics.fmean(r.epochs() for r in mine):.0f}", saved,
    ]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=Path(__file__).resolve().parent / "search_task.toml",
                        help="the task: study file whose data, search space and baseline are searched")
    parser.add_argument("--arch", default=None, help="architecture (default: the study file's last)")
    parser.add_argument("--n-trials", type=int, default=None, help="trials per run (default: the file's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--method", action="append", default=[],
                        help="another strategy, SAMPLER:PRUNER (names as in study files), repeatable")
    parser.add_argument("--only", nargs="+", default=None,
                        help="run just these strategies (SAMPLER:PRUNER), e.g. to add one to an earlier run's table")
    parser.add_argument("--pruner-option", action="append", default=[],
                        help="a [pruner] setting for every pruned strategy, NAME=VALUE, repeatable")
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1, as each of 2 workers)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (default 1)")
    parser.add_argument("--smoke", action="store_true", help="one tiny run per default strategy: does it work")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.n_trials = args.seeds[:1], 2
    return args


if __name__ == "__main__":
    run(main)
