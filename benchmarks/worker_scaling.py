"""Trials per hour with ``launch --workers 1`` against more workers sharing the same machine.

Each launch is the real thing: ``spheroid_hpo.tuning.launch.launch`` (what ``spheroid-hpo launch``
calls) starts worker processes on a fresh SQLite study in a scratch folder, and the CPU
threads are split between workers as the launcher does. Every trial trains the same fixed
number of epochs with no pruning, so trials cost the same in every launch and trials per
hour measure throughput, not sampling luck. The clock runs from launch to the last worker's
exit, so worker start-up and data decoding count.

Launches alternate (1 worker, N workers, N workers, 1 worker, ...) and medians are reported.

    python benchmarks/worker_scaling.py                          # CPU: 1 vs 2 workers, ~5 min on 2 cores
    python benchmarks/worker_scaling.py --device cuda --workers 1 4 --image-size 224 --n-trials 16
"""

from __future__ import annotations

import argparse
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

import optuna
from _common import describe_machine, format_table, load_average, median, run
from rich.console import Console

from spheroid_hpo.training.device import resolve_device
from spheroid_hpo.tuning.launch import launch, threads_per_worker
from spheroid_hpo.tuning.study_file import load_study_config

STUDY = """
[study]
name = "scaling"
architectures = ["{arch}"]
n_trials = {n_trials}

[search_space]
epochs = {epochs}              # fixed, and no pruner: every trial costs the same
lr = {{ low = 1e-4, high = 1e-3, log = true }}
rotation = {{ low = 10.0, high = 25.0 }}
batch_size = {batch_size}

[sampler]
name = "random"
seed = 0

[pruner]
name = "none"

[data]
image_size = {image_size}

[data.demo]
per_class = {per_class}
size = {image_size}
seed = 0

[training]
precision = "auto"
seed = 0
"""


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = resolve_device(args.device)
    gpus = [device.index or 0] if device.type == "cuda" else []
    worker_counts = args.workers or ([1, 4] if device.type == "cuda" else [1, 2])
    print(describe_machine(device))
    print(f"{load_average()} at start")
    print(
        f"study: {args.arch}, {args.n_trials} trials of {args.epochs} epochs, batch size {args.batch_size}, "
        f"{args.image_size} px demo data ({args.per_class} images per class); on {device.type}; "
        f"{args.repeats} launches per worker count\n"
    )
    results: dict[int, list[tuple[float, int, float]]] = {count: [] for count in worker_counts}
    for round_number in range(args.repeats):
        order = worker_counts if round_number % 2 == 0 else worker_counts[::-1]
        for workers in order:
            seconds, finished, speed = _launch_once(workers, gpus=gpus, args=args)
            results[workers].append((seconds, finished, speed))
            print(f"{workers} worker(s): {finished} trials in {seconds:.1f} s = {3600 * finished / seconds:.0f} "
                  f"trials/hour, {speed:.0f} train img/s per trial ({load_average()})", flush=True)

    base = median([3600 * finished / seconds for seconds, finished, _ in results[worker_counts[0]]])
    rows = []
    for workers in worker_counts:
        rate = median([3600 * finished / seconds for seconds, finished, _ in results[workers]])
        rows.append([
            workers, threads_per_worker(workers) if device.type == "cpu" else "-",
            f"{median([s for s, _, _ in results[workers]]):.1f}", f"{rate:.0f}",
            f"{median([v for _, _, v in results[workers]]):.0f}", f"{rate / base:.2f}x",
        ])
    print()
    print(format_table(
        ["workers", "threads each", "launch s", "trials/hour", "img/s per trial", f"vs {worker_counts[0]} worker"],
        rows,
    ))
    print(f"\n{load_average()} at end; medians over {args.repeats} launches each")


def _launch_once(workers: int, *, gpus: list[int], args) -> tuple[float, int, float]:
    """Run the study to the end of its budget with ``workers`` workers; (seconds, trials finished, img/s)."""
    with tempfile.TemporaryDirectory(prefix="spheroid-bench-") as scratch:
        scratch = Path(scratch)
        study_file = scratch / "scaling.toml"
        study_file.write_text(STUDY.format(
            arch=args.arch, n_trials=args.n_trials, epochs=args.epochs, batch_size=args.batch_size,
            image_size=args.image_size, per_class=args.per_class,
        ))
        summary = launch(
            config=load_study_config(study_file), workers=workers, gpus=gpus, runs_dir=scratch / "runs",
            console=Console(file=io.StringIO()),
        )
        if any(code != 0 for code in summary.worker_exit_codes):
            log = next((scratch / "runs" / "scaling" / "logs").glob("*.log")).read_text()[-2000:]
            raise SystemExit(f"a worker failed (exit codes {summary.worker_exit_codes}):\n{log}")
        (row,) = summary.progress
        return summary.seconds, row.complete, row.images_per_second or 0.0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda/cuda:N: every worker shares that GPU")
    parser.add_argument("--workers", nargs="+", type=int, default=None,
                        help="worker counts to compare, the first is the baseline (default: 1 2 on CPU, 1 4 on GPU)")
    parser.add_argument("--arch", default="squeezenet1_1")
    parser.add_argument("--n-trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="launches per worker count (default 3)")
    parser.add_argument("--smoke", action="store_true", help="one tiny round: does it run")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(workers=[1], n_trials=1, epochs=1, image_size=32, per_class=4, repeats=1)
    return args


if __name__ == "__main__":
    run(main)
