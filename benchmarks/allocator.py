"""What ``loop.train``'s allocator setting buys on CPU: epochs with it against epochs without.

glibc's allocator setting is process-wide and cannot be undone, so each measurement is
its own child process: one runs ``loop.train`` as shipped, the other the same with
``device_policy.reuse_freed_memory`` replaced by a no-op (glibc's default behaviour). Each child
trains one warm-up epoch and then times a few epochs on random 224 px images, counting
the page faults and kernel CPU time of the timed epochs. Children alternate; medians.

    python benchmarks/allocator.py                       # MobileNet V3 Large, ~2 min on 2 cores
    python benchmarks/allocator.py --arch squeezenet1_0 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from collections.abc import Sequence

import torch
from _common import describe_machine, format_table, load_average, median, run

from spheroid_hpo.training.hyperparams import Hyperparams

CHILD = "child"


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    if args.mode == CHILD:
        _child(args)
        return
    print(describe_machine(torch.device("cpu")))
    print(f"{load_average()} at start; {args.arch}, {args.images} images of 224 px, batch size 10, "
          f"{args.epochs} timed epochs per process, {args.rounds} processes each\n")
    results: dict[str, list[dict]] = {"glibc default": [], "loop.train (reuse freed memory)": []}
    for round_number in range(args.rounds):
        names = list(results) if round_number % 2 == 0 else list(results)[::-1]
        for name in names:
            results[name].append(_spawn(args, reuse=name != "glibc default"))
            print(f"{name}: {results[name][-1]['images_per_second']:.1f} img/s ({load_average()})", flush=True)
    rows = []
    base = median([r["images_per_second"] for r in results["glibc default"]])
    for name, runs in results.items():
        speed = median([r["images_per_second"] for r in runs])
        rows.append([name, f"{speed:.1f}", f"{speed / base:.2f}x", f"{median([r['page_faults'] for r in runs]):.0f}",
                     f"{median([r['kernel_seconds'] for r in runs]):.2f}",
                     f"{median([r['user_seconds'] for r in runs]):.2f}"])
    print()
    print(format_table(["allocator", "train img/s", "speed", "page faults", "kernel CPU s", "user CPU s"], rows))
    print(f"\nper process over the {args.epochs} timed epochs, medians of {args.rounds}; {load_average()} at end")


def _spawn(args, *, reuse: bool) -> dict:
    command = [sys.executable, __file__, "--mode", CHILD, "--arch", args.arch, "--images", str(args.images),
               "--epochs", str(args.epochs)] + ([] if reuse else ["--no-reuse"])
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _child(args) -> None:
    from spheroid_hpo.training import device as device_policy
    from spheroid_hpo.training import loop
    from spheroid_hpo.training.models import create_model

    if args.no_reuse:
        device_policy.reuse_freed_memory = lambda: None
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.images, 3, 224, 224, generator=generator).half()
    labels = torch.arange(args.images) % 4
    model = create_model(args.arch, num_classes=4).to(memory_format=torch.channels_last)

    def epochs(count: int) -> list[loop.EpochStats]:
        return loop.train(
            model, train_images=images, train_labels=labels, val_images=images[:10], val_labels=labels[:10],
            num_classes=4, hyperparams=Hyperparams(epochs=count, lr=1e-4, batch_size=10, rotation=20.0), seed=0,
        )

    epochs(1)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF)
    history = epochs(args.epochs)
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "images_per_second": median([s.images_per_second for s in history]),
        "page_faults": after.ru_minflt - before.ru_minflt,
        "kernel_seconds": after.ru_stime - before.ru_stime,
        "user_seconds": after.ru_utime - before.ru_utime,
    }))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="mobilenet_v3_large")
    parser.add_argument("--images", type=int, default=60, help="training images per epoch (default 60)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per process (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="processes per setting (default 3)")
    parser.add_argument("--mode", default="parent", help=argparse.SUPPRESS)
    parser.add_argument("--no-reuse", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="one tiny round: does it run")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(arch="squeezenet1_1", images=4, epochs=1, rounds=1)
    return args


if __name__ == "__main__":
    run(main)
