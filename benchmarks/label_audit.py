"""Does `audit-labels` find planted label errors? Precision and recall of the flipped files among its suspects.

A copy of the data has ``--fraction`` (5%) of its images moved to another class folder
(``spheroid_hpo.results.audit.plant_flips``); the copy is split afresh with the
configuration's fractions and seed, and audited with ``--folds`` folds of train+val
(``audit_plan``, what ``spheroid-hpo audit-labels`` calls). Flips that land in the test
split are out of the audit's reach by design, so recall counts the flips in train+val.
The configuration is ``studies/best.toml``'s (the winner of ``studies/ci.toml``) unless
``--epochs`` or ``--image-size`` override it.

    python benchmarks/label_audit.py --seeds 0 1 2 --threads 1          # demo data like ci.toml's, 3 flip draws
    python benchmarks/label_audit.py --data COPY_OF/ifc_cellcycle --image-size 32 --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import describe_machine, load_average, run

from spheroid_hpo.data.demo import write_demo_data
from spheroid_hpo.results.audit import audit_plan, plan_for_folder, plant_flips
from spheroid_hpo.results.best_file import read_best_config
from spheroid_hpo.training.hyperparams import Hyperparams

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="data folder to copy and flip (default: demo data like ci.toml's)")
    parser.add_argument("--best", type=Path, default=ROOT / "studies" / "best.toml")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, help="override the configuration's epochs")
    parser.add_argument("--image-size", type=int, help="override the configuration's image size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="which files are flipped: one audit per seed")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, help="keep the audit's files here")
    parser.add_argument("--smoke", action="store_true", help="tiny data, 1 epoch, 2 folds: does it run")
    args = parser.parse_args(argv)
    demo = None
    if args.smoke:
        args.epochs, args.folds, args.image_size, args.fraction = 1, 2, 32, 0.2
        demo = {"per_class": 8, "size": 32, "seed": 0}
    torch.set_num_threads(args.threads)
    best = read_best_config(args.best)
    params = dict(best.params)
    if args.epochs:
        params["epochs"] = args.epochs
    image_size = args.image_size or best.image_size
    print(describe_machine(torch.device("cpu")) + "; " + load_average() + " at the start")
    rows = [_audit_one(args, best, params, image_size, demo, seed) for seed in args.seeds]
    if len(rows) > 1:
        precisions, recalls, seconds = zip(*rows)
        print(f"over flip seeds {' '.join(map(str, args.seeds))}: precision min {min(precisions):.3f} "
              f"mean {statistics.fmean(precisions):.3f}; recall min {min(recalls):.3f} "
              f"mean {statistics.fmean(recalls):.3f}; time mean {statistics.fmean(seconds):.0f} s; "
              f"{load_average()} at the end")


def _audit_one(args, best, params: dict, image_size: int, demo: dict | None, seed: int) -> tuple[float, float, float]:
    """Flip ``args.fraction`` of a fresh copy with ``seed``, audit it; print and return (precision, recall, seconds)."""
    with tempfile.TemporaryDirectory(prefix="label-audit-") as scratch:
        scratch = Path(scratch)
        source = args.data
        if source is None:
            source = scratch / "demo"
            write_demo_data(source, **(demo or best.demo or {}))
        truth = plant_flips(source, scratch / "flipped", fraction=args.fraction, seed=seed)
        plan = plan_for_folder(scratch / "flipped", architecture=best.architecture,
                               hyperparams=Hyperparams.from_params(params), image_size=image_size,
                               split=best.split, precision=best.precision,
                               weights=best.weights, seed=best.seeds[0])
        started = time.perf_counter()
        out = args.out / f"seed-{seed}" if args.out else scratch / "audit"
        result = audit_plan(plan, folds=args.folds, out_dir=out)
        seconds = time.perf_counter() - started
    audited = set(result.held_out.paths)
    reachable = {path for path in truth if path in audited}
    flagged = {s.path for s in result.suspects}
    hits = flagged & reachable
    corrected = sum(1 for s in result.suspects if s.path in truth and s.suggested_label == truth[s.path])
    precision, recall = len(hits) / max(1, len(flagged)), len(hits) / max(1, len(reachable))
    print(f"flip seed {seed}; configuration: {best.architecture} {dataclasses.asdict(plan.hyperparams)} at "
          f"{image_size} px, {args.folds} folds, {args.threads} threads")
    print(f"images {len(audited)} in train+val; flipped {len(truth)} in all, {len(reachable)} in train+val")
    print(f"suspects {len(flagged)}; flipped among them {len(hits)}; suggested label = true class for {corrected}")
    print(f"precision {precision:.3f}  recall {recall:.3f}  time {seconds:.0f} s; {load_average()} at the end",
          flush=True)
    return precision, recall, seconds

if __name__ == "__main__":
    run(main)
