"""Which probabilities and which cleanlab filter make the label audit precise (the audit's choices, measured).

For each flip seed, a copy of demo data like ``studies/ci.toml``'s gets 5% of its labels
flipped (``plant_flips``) and is cut into the audit's folds; each fold is retrained with the
recipe (``training.recipe.fit``, as ``audit-labels`` does) and its held-out images' logits are
saved, plain and for the 8 dihedral views, with the fold's fitted temperature (``--out``,
one .npz per seed). Then every probability variant (one view or the TTA mean, temperature 1
or the fold's) is scored with every ``filter_by`` of ``cleanlab.filter.find_label_issues``:
precision / recall / number flagged per seed. BENCHMARKS.md, "Label audit", gives the table.

    python benchmarks/_label_audit_variants.py --seeds 0 1 2 --out /tmp/variants   # ~4 min a seed on 1 thread
    python benchmarks/_label_audit_variants.py --seeds 0 1 2 --out /tmp/variants --analyse-only
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from spheroid_hpo.data import DEFAULT_MANIFEST_NAME, TrainingData, training_data
from spheroid_hpo.data.demo import write_demo_data
from spheroid_hpo.results.audit import plan_for_folder, plant_flips
from spheroid_hpo.results.best_file import read_best_config
from spheroid_hpo.training import inference
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.recipe import TrainSpec, fit
from spheroid_hpo.training.tta import dihedral_views

ROOT = Path(__file__).resolve().parents[1]
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
           "low_self_confidence", "low_normalized_margin")


def dump(seed: int, out: Path, folds: int) -> None:
    """Retrain the winner on each fold of a flipped copy; save the held-out logits (plain and 8 views)."""
    best = read_best_config(ROOT / "studies" / "best.toml")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="label-audit-variants-") as scratch:
        scratch = Path(scratch)
        write_demo_data(scratch / "demo", **best.demo)
        truth = plant_flips(scratch / "demo", scratch / "flipped", fraction=0.05, seed=seed)
        plan = plan_for_folder(scratch / "flipped", architecture=best.architecture,
                               hyperparams=Hyperparams.from_params(best.params), image_size=best.image_size,
                               split=best.split, precision=best.precision, weights=best.weights, seed=best.seeds[0])
        dataset = plan.load_train_val(scratch / DEFAULT_MANIFEST_NAME)
        data = training_data(dataset, manifest=scratch / DEFAULT_MANIFEST_NAME, cv_folds=folds,
                             split_seed=plan.split_seed)
    paths = dataset.train.paths + dataset.val.paths
    row_of = {path: row for row, path in enumerate(paths)}
    plain = np.zeros((len(paths), len(dataset.class_names)))
    views = np.zeros((8, *plain.shape))
    temperature = np.zeros(folds)
    spec = TrainSpec(architecture=plan.architecture, hyperparams=plan.hyperparams, seed=plan.seed,
                     precision=plan.precision, weights=plan.weights)
    for fold, (train, held) in enumerate(data.runs()):
        fitted = fit(spec, TrainingData(train=train, val=held, class_names=dataset.class_names,
                                        image_size=dataset.image_size), device=torch.device("cpu"))
        rows = [row_of[path] for path in held.paths]
        plain[rows] = inference.predict_logits(fitted.model, held.images).cpu().numpy()
        for v, view in enumerate(dihedral_views(held.images)):
            views[v][rows] = inference.predict_logits(fitted.model, view.contiguous()).cpu().numpy()
        temperature[fold] = fitted.calibration.temperature
        print(f"flip seed {seed} fold {fold + 1}/{folds}: T {temperature[fold]:.2f}", flush=True)
    labels = torch.cat([dataset.train.labels, dataset.val.labels]).numpy()
    np.savez(out / f"seed-{seed}.npz", plain=plain, views=views, temperature=temperature, labels=labels,
             flipped=np.array([path in truth for path in paths]), fold_of=np.asarray(data.folds))
    print(f"flip seed {seed}: {len(paths)} images, {sum(p in truth for p in paths)} flipped in train+val, "
          f"{time.perf_counter() - started:.0f} s", flush=True)


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def analyse(files: list[Path]) -> None:
    """Precision / recall / flagged of every probability variant and filter, one column per seed."""
    from cleanlab.filter import find_label_issues

    table: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for file in files:
        saved = np.load(file)
        t = saved["temperature"][saved["fold_of"]][:, None]
        variants = {"one view, T=1": _softmax(saved["plain"]), "one view, fold T": _softmax(saved["plain"] / t),
                    "TTA, T=1": _softmax(saved["views"]).mean(0), "TTA, fold T": _softmax(saved["views"] / t).mean(0)}
        flipped = saved["flipped"]
        for variant, probabilities in variants.items():
            for filter_by in FILTERS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    flagged = find_label_issues(saved["labels"], probabilities, filter_by=filter_by, n_jobs=1)
                hits = int((flagged & flipped).sum())
                table.setdefault((variant, filter_by), []).append(
                    (hits / max(1, flagged.sum()), hits / max(1, flipped.sum()), int(flagged.sum())))
    print("| probabilities | filter_by | " + " | ".join(f"{f.stem}: P / R / flagged" for f in files) + " | min |")
    print("|---|---|" + "---|" * (len(files) + 1))
    for (variant, filter_by), cells in table.items():
        shown = " | ".join(f"{p:.2f} / {r:.2f} / {n}" for p, r, n in cells)
        print(f"| {variant} | {filter_by} | {shown} | {min(min(p, r) for p, r, _ in cells):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--analyse-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.analyse_only:
        for seed in args.seeds:
            dump(seed, args.out, args.folds)
    analyse([args.out / f"seed-{seed}.npz" for seed in args.seeds])


if __name__ == "__main__":
    main()
