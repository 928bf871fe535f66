"""``spheroid-hpo train``: one CNN on one data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from spheroid_hpo.cli._app import app, split_names
from spheroid_hpo.defaults import (
    IMAGE_SIZE,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    NEAR_DUPLICATES,
    RUNS_DIR,
    SPLIT_FRACTIONS,
    SPLIT_SEED,
)
from spheroid_hpo.training.settings import TRAINING_DEFAULTS


def _data_or_demo(data: Path | None) -> Path:
    """The user's data folder, or the generated demo data set when none is given."""
    from spheroid_hpo.data import data_folder

    if data is None:
        typer.echo(f"no --data given: using the generated demo data set under {RUNS_DIR}/", err=True)
    return data_folder(data, runs_dir=RUNS_DIR)


@app.command("train")
def train_command(
    data: Annotated[Optional[Path], typer.Option(help="Data folder ROOT/<class>/<image>; default: generated demo data.")] = None,
    out: Annotated[Path, typer.Option(help="Run folder to write metrics.json, model.pt and figures into.")] = RUNS_DIR / "train",
    arch: Annotated[str, typer.Option(help="Architecture, e.g. squeezenet1_0, mobilenet_v3_large.")] = "squeezenet1_0",
    epochs: Annotated[int, typer.Option(help="Training epochs (paper: 55-70).")] = 60,
    lr: Annotated[float, typer.Option(help="Adam learning rate (paper: 1e-6 to 1e-3).")] = 1e-4,
    rotation: Annotated[float, typer.Option(help="Random rotation range in degrees, +/- (0 to 180).")] = 20.0,
    batch_size: Annotated[int, typer.Option(help="Batch size, at least 2 (paper: 5-15).")] = 10,
    image_size: Annotated[int, typer.Option(help=f"Images are resized once to this square size, {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} px.")] = IMAGE_SIZE,
    seed: Annotated[int, typer.Option(help="Seed for initialisation, shuffling and rotations.")] = TRAINING_DEFAULTS.seed,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")] = "auto",
    weights: Annotated[str, typer.Option(help="none, imagenet (from the local torch hub cache) or a state-dict path.")] = TRAINING_DEFAULTS.weights,
    precision: Annotated[str, typer.Option(help="auto (bf16 where the hardware has it), fp32, bf16 or fp16.")] = TRAINING_DEFAULTS.precision,
    bn_momentum: Annotated[Optional[float], typer.Option(help="Override BatchNorm momentum of every layer.")] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of a new split (a study file's [data] split_seed).")] = SPLIT_SEED,
    fractions: Annotated[Optional[str], typer.Option(help="Train,val,test fractions of a new split, e.g. 0.7,0.15,0.15.")] = None,
    group_by: Annotated[Optional[str], typer.Option(help="Regex with a capture group on the file name, e.g. '(sph\\d+)_', keeping each group in one split.")] = None,
    groups_csv: Annotated[Optional[Path], typer.Option(help="CSV with columns path,group keeping each group in one split.")] = None,
    split_manifest: Annotated[Optional[Path], typer.Option(help="Split manifest CSV to reuse or create; default DATA/splits.csv.")] = None,
    near_duplicates: Annotated[str, typer.Option(help="together (default: near-duplicate images share a split, relaxed with one line when that leaves no split) or apart.")] = NEAR_DUPLICATES,
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated class names, in label order.")] = None,
    class_weights: Annotated[str, typer.Option(help="none, or balanced: weight the loss by inverse class frequency in the train split.")] = "none",
    lr_schedule: Annotated[str, typer.Option(help="constant (the paper's), or cosine: the learning rate falls to near 0 by the last epoch.")] = "constant",
    weight_decay: Annotated[float, typer.Option(help="Adam's weight decay (L2 penalty), 0 to 1 (paper: 0).")] = 0.0,
    cv_folds: Annotated[Optional[int], typer.Option(help="Train once per fold of train+val, as a study with [data] cv_folds does; the model is the last fold's.")] = None,
) -> None:
    """Train one CNN on a folder of images and write its run folder."""
    from spheroid_hpo.data import SplitSpec, parse_fractions
    from spheroid_hpo.training.hyperparams import Hyperparams
    from spheroid_hpo.training.run import run_training

    hyperparams = Hyperparams(epochs=epochs, lr=lr, rotation=rotation, batch_size=batch_size,
                              bn_momentum=bn_momentum, class_weights=class_weights, weight_decay=weight_decay,
                              lr_schedule=lr_schedule)
    result = run_training(
        data_dir=_data_or_demo(data), out_dir=out, arch=arch, hyperparams=hyperparams, image_size=image_size,
        seed=seed, device=device, weights=weights, precision=precision, class_names=split_names(classes),
        split=SplitSpec(seed=split_seed, fractions=parse_fractions(fractions) if fractions else SPLIT_FRACTIONS,
                        group_by=group_by, groups_csv=groups_csv, manifest=split_manifest,
                        near_duplicates=near_duplicates),
        cv_folds=cv_folds,
    )
    crossing = result.duplicate_groups_across_splits
    typer.echo(f"duplicate groups across splits in {result.split_manifest}: {len(crossing)}")
    val, test = result.validation, result.test
    if result.cv_fold_val_macro_f1:
        typer.echo(f"mean validation macro-F1 over {len(result.cv_fold_val_macro_f1)} folds "
                   f"{result.val_macro_f1:.3f} (" + ", ".join(f"{s:.3f}" for s in result.cv_fold_val_macro_f1) + ")")
    typer.echo(f"validation macro-F1 {val['macro_f1']:.3f}, accuracy {val['accuracy']:.3f}")
    typer.echo(f"test       macro-F1 {test['macro_f1']:.3f}, accuracy {test['accuracy']:.3f}")
    calibration = result.calibration
    typer.echo(f"temperature {calibration['temperature']:.3f}: validation ECE {calibration['val']['ece_before']:.3f} "
               f"-> {calibration['val']['ece_after']:.3f}, test ECE {calibration['test']['ece_before']:.3f} "
               f"-> {calibration['test']['ece_after']:.3f}")
    typer.echo(f"wrote {out}/metrics.json, model.pt, curves.png, confusion.png, reliability.png "
               f"({result.wall_time_seconds:.0f} s)")
