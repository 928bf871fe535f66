"""What the pruner saves: total epochs trained and best validation macro-F1, pruner vs no pruning.

The study file is launched twice with one worker (``spheroid_hpo.tuning.launch.launch``, what
``spheroid-hpo launch`` calls), each time on a fresh SQLite study in a scratch folder:
once as written, with its configured pruner, and once with ``[pruner] name = "none"``.
Everything else is the same: sampler and seed, trial count, data, training seed. Epochs
trained are summed from every trial's ``epochs_trained``; the best macro-F1 is the
study's best completed trial, per architecture.

Both launches see the same first trials (the baseline, the sampler's random start-up);
after that the sampler reads the results so far, which include which trials were
pruned, so the two launches may go on to propose different points.

    python benchmarks/pruning.py                                   # studies/quickstart.toml, ~5 min on 2 cores
    python benchmarks/pruning.py --study studies/quickstart.toml --n-trials 20
    python benchmarks/pruning.py --pruner "name = 'hyperband'" --pruner "min_resource = 2"
"""

from __future__ import annotations

import argparse
import io
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import optuna
import torch
from _common import describe_machine, format_table, load_average, run
from optuna.trial import TrialState
from rich.console import Console

from spheroid_hpo.training.hyperparams import format_params
from spheroid_hpo.tuning.launch import launch
from spheroid_hpo.tuning.storage import open_storage
from spheroid_hpo.tuning.study_file import load_study_config

# --smoke: the smallest study that launches, trains and can prune (a median pruner from the first epoch).
SMOKE_STUDY = """
[study]
name = "smoke"
architectures = ["squeezenet1_1"]
n_trials = 2

[search_space]
epochs = 2
lr = { low = 1e-4, high = 1e-3, log = true }
rotation = 10.0
batch_size = 4

[pruner]
name = "median"
n_startup_trials = 1
n_warmup_steps = 0

[data]
image_size = 32

[data.demo]
per_class = 4
size = 32
"""

# The [pruner] table of a study file: from its header to the next table or the end.
PRUNER_TABLE = re.compile(r"^\[pruner\][^\n]*\n(?:(?!\[)[^\n]*\n?)*", re.MULTILINE)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    text = SMOKE_STUDY if args.smoke else args.study.read_text()
    if args.pruner:
        text = _with_pruner(text, "\n".join(args.pruner))
    configured = PRUNER_TABLE.search(text)
    if configured is None:
        raise SystemExit(f"{args.study} has no [pruner] table; this benchmark compares one with no pruning")
    print(describe_machine(torch.device("cpu")))
    print(f"{load_average()} at start")
    print(f"study file {args.study}, {args.n_trials or 'its'} trials per architecture, one worker\n")
    pruned = _run(text, label="configured pruner", args=args)
    unpruned = _run(_with_pruner(text, 'name = "none"'), label="no pruning", args=args)

    rows = []
    for architecture in pruned:
        with_pruner, without = pruned[architecture], unpruned[architecture]
        rows.append([
            architecture,
            f"{without['epochs']}", f"{with_pruner['epochs']}",
            f"{1 - with_pruner['epochs'] / without['epochs']:.0%}",
            f"{without['best']:.3f}", f"{with_pruner['best']:.3f}", f"{with_pruner['best'] - without['best']:+.3f}",
            f"{with_pruner['pruned']}/{with_pruner['trials']}",
            f"{without['seconds']:.0f}", f"{with_pruner['seconds']:.0f}",
        ])
    total_without = sum(r["epochs"] for r in unpruned.values())
    total_with = sum(r["epochs"] for r in pruned.values())
    print()
    print("configured pruner:\n" + configured.group(0).strip())
    print()
    print(format_table(
        ["architecture", "epochs no pruning", "epochs pruner", "epochs saved", "best F1 no pruning",
         "best F1 pruner", "difference", "trials pruned", "trial s no pruning", "trial s pruner"],
        rows,
    ))
    print(f"\nall architectures: {total_without} -> {total_with} epochs, "
          f"{1 - total_with / total_without:.0%} saved; best F1 = best validation macro-F1 of a completed trial; "
          f"trial s = summed trial wall time. {load_average()} at end")


def _run(text: str, *, label: str, args) -> dict[str, dict]:
    """Launch the study file ``text`` in a scratch folder; per architecture: epochs, best F1, counts."""
    with tempfile.TemporaryDirectory(prefix="spheroid-bench-") as scratch:
        scratch = Path(scratch)
        study_file = scratch / args.study.name
        study_file.write_text(text)
        config = load_study_config(study_file, n_trials=args.n_trials)
        summary = launch(config=config, workers=1, gpus=[], runs_dir=scratch / "runs",
                         console=Console(file=io.StringIO()))
        if summary.worker_exit_codes != [0]:
            raise SystemExit(f"the worker failed with {label} (exit codes {summary.worker_exit_codes})")
        storage = open_storage(summary.storage_url, heartbeat_interval=None)
        results = {}
        for architecture in config.architectures:
            study = optuna.load_study(study_name=config.study_name(architecture), storage=storage)
            trials = study.get_trials(deepcopy=False)
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            best = max(complete, key=lambda t: t.value)
            results[architecture] = {
                "epochs": sum(
                    int(t.user_attrs.get("epochs_trained", 0)) - int(t.user_attrs.get("epochs_restored", 0))
                    for t in trials
                ),
                "best": best.value,
                "trials": len(trials),
                "pruned": sum(t.state == TrialState.PRUNED for t in trials),
                "seconds": sum(t.user_attrs.get("wall_time_seconds", 0.0) for t in trials),
            }
            print(f"{label}, {architecture}: {results[architecture]['epochs']} epochs over {len(trials)} trials "
                  f"({results[architecture]['pruned']} pruned), best val macro-F1 {best.value:.3f} "
                  f"(trial {best.number}: {format_params(best.params, short=True)})", flush=True)
    return results


def _with_pruner(text: str, body: str) -> str:
    """``text`` with its [pruner] table replaced by one holding ``body`` (TOML key = value lines)."""
    table = f"[pruner]\n{body}\n\n"
    if PRUNER_TABLE.search(text) is None:
        return f"{text.rstrip()}\n\n{table}"
    return PRUNER_TABLE.sub(lambda _: table, text, count=1)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=Path(__file__).parent.parent / "studies" / "quickstart.toml",
                        help="study file to launch (default studies/quickstart.toml)")
    parser.add_argument("--n-trials", type=int, default=None, help="trials per architecture (default: the file's)")
    parser.add_argument("--pruner", action="append", default=[],
                        help="replace the file's [pruner] table with these TOML lines (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="a tiny study, one round: does it run")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(main)
