"""The ``spheroid-hpo`` command line: each command parses, then calls one library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from spheroid_hpo.errors import InputError

app = typer.Typer(
    help="Hyperparameter optimisation for CNNs that classify microscopy images of cell spheroids.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEMO_DATA_DIR = Path("runs/demo-data")


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except InputError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)


def _split_names(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def _data_or_demo(data: Path | None) -> Path:
    """The user's data folder, or the generated demo data set when none is given."""
    if data is not None:
        return data
    from spheroid_hpo.demo_data import ensure_demo_data

    typer.echo(f"no --data given: using the generated demo data set in {DEMO_DATA_DIR}/", err=True)
    return ensure_demo_data(DEMO_DATA_DIR)


@app.command("demo-data")
def demo_data_command(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write ROOT/<class>/<image>.png into.")],
    per_class: Annotated[int, typer.Option(min=3, help="Mean number of images per class (classes are imbalanced).")] = 40,
    size: Annotated[int, typer.Option(min=16, help="Image side in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same files.")] = 0,
) -> None:
    """Write a synthetic brightfield spheroid data set in the paper's four classes."""
    from spheroid_hpo.demo_data import write_demo_data

    counts = write_demo_data(out_dir, per_class=per_class, size=size, seed=seed)
    for name, count in counts.items():
        typer.echo(f"{name:<20} {count:>5} images")
    typer.echo(f"wrote {sum(counts.values())} images to {out_dir}")


@app.command("check-data")
def check_data_command(
    data_dir: Annotated[Path, typer.Argument(help="Data folder laid out as ROOT/<class name>/<image>.")],
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated class names, in label order.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Per class: image count, formats, bit depths, size range; and every problem file with its reason."""
    from spheroid_hpo.data import check_data

    report = check_data(data_dir, class_names=_split_names(classes))
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format_table())


@app.command("train")
def train_command(
    data: Annotated[Optional[Path], typer.Option(help="Data folder ROOT/<class>/<image>; default: generated demo data.")] = None,
    out: Annotated[Path, typer.Option(help="Run folder to write metrics.json, model.pt and figures into.")] = Path("runs/train"),
    arch: Annotated[str, typer.Option(help="Architecture, e.g. squeezenet1_0, mobilenet_v3_large.")] = "squeezenet1_0",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs (paper: 55-70).")] = 60,
    lr: Annotated[float, typer.Option(help="Adam learning rate (paper: 1e-6 to 1e-3).")] = 1e-4,
    rotation: Annotated[float, typer.Option(min=0, max=180, help="Random rotation range in degrees, +/-.")] = 20.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size (paper: 5-15).")] = 10,
    image_size: Annotated[int, typer.Option(min=16, help="Images are resized once to this square size.")] = 224,
    seed: Annotated[int, typer.Option(help="Seed for the split, initialisation, shuffling and rotations.")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")] = "auto",
    weights: Annotated[str, typer.Option(help="none, imagenet (from the local torch hub cache) or a state-dict path.")] = "none",
    precision: Annotated[str, typer.Option(help="auto (bf16 where the hardware has it), fp32, bf16 or fp16.")] = "auto",
    bn_momentum: Annotated[Optional[float], typer.Option(help="Override BatchNorm momentum of every layer.")] = None,
    group_by: Annotated[Optional[str], typer.Option(help="Regex with a capture group on the file name, e.g. '(sph\\d+)_', keeping each group in one split.")] = None,
    groups_csv: Annotated[Optional[Path], typer.Option(help="CSV with columns path,group keeping each group in one split.")] = None,
    split_manifest: Annotated[Optional[Path], typer.Option(help="Split manifest CSV to reuse or create; default DATA/splits.csv.")] = None,
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated class names, in label order.")] = None,
) -> None:
    """Train one CNN on a folder of images and write its run folder."""
    from spheroid_hpo.training_run import run_training

    results = run_training(
        data_dir=_data_or_demo(data), out_dir=out, arch=arch, epochs=epochs, lr=lr, rotation=rotation,
        batch_size=batch_size, image_size=image_size, seed=seed, device=device, weights=weights,
        precision=precision, bn_momentum=bn_momentum, group_by=group_by, groups_csv=groups_csv,
        split_manifest=split_manifest, class_names=_split_names(classes),
    )
    val, test = results["validation"], results["test"]
    typer.echo(f"validation macro-F1 {val['macro_f1']:.3f}, accuracy {val['accuracy']:.3f}")
    typer.echo(f"test       macro-F1 {test['macro_f1']:.3f}, accuracy {test['accuracy']:.3f}")
    typer.echo(f"wrote {out}/metrics.json, model.pt, curves.png, confusion.png "
               f"({results['wall_time_seconds']:.0f} s)")


DEFAULT_STUDY = Path("studies/quickstart.toml")


def _parse_gpus(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--gpus must be comma-separated GPU indices such as 0,1, but got {value!r}") from None


@app.command("launch")
def launch_command(
    workers: Annotated[int, typer.Option(min=1, help="Worker processes to start on this machine.")] = 1,
    study: Annotated[Path, typer.Option(help="Study file (TOML) with the search space and budget.")] = DEFAULT_STUDY,
    data: Annotated[Optional[Path], typer.Option(help="Data folder ROOT/<class>/<image>; overrides the study file.")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Storage URL; default sqlite:///runs/<study>/study.db.")] = None,
    n_trials: Annotated[Optional[int], typer.Option(help="Trials per architecture; overrides the study file.")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Stop starting trials after this many seconds.")] = None,
    gpus: Annotated[Optional[str], typer.Option(help="GPU indices to spread workers over, e.g. 0,1.")] = None,
    artifacts: Annotated[Optional[Path], typer.Option(help="Artifact folder; default runs/<study>/artifacts.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder for studies, demo data, logs.")] = Path("runs"),
    heartbeat_interval: Annotated[Optional[int], typer.Option(min=1, help="Seconds between trial heartbeats.")] = None,
) -> None:
    """Create the studies once and run N workers until every architecture's budget is spent."""
    from spheroid_hpo.config import load_study_config
    from spheroid_hpo.launch import launch, print_launch_summary

    config = load_study_config(study, data=data, storage=storage, n_trials=n_trials, timeout=timeout)
    summary = launch(
        config=config, workers=workers, gpus=_parse_gpus(gpus), artifact_dir=artifacts, runs_dir=runs_dir,
        heartbeat_interval=heartbeat_interval,
    )
    raise typer.Exit(print_launch_summary(summary))


@app.command("worker")
def worker_command(
    storage: Annotated[Optional[str], typer.Option(help="Storage URL of a launched study.")] = None,
    study: Annotated[Optional[str], typer.Option(help="Study name; needed when the storage holds several.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="This machine's copy of the study's data folder.")] = None,
    artifacts: Annotated[Optional[Path], typer.Option(help="Artifact folder shared by all workers.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder for demo data, split manifest, checkpoints.")] = Path("runs"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for this worker.")] = None,
    worker_index: Annotated[int, typer.Option(min=0, help="Distinct per worker: offsets the sampler seed.")] = 0,
    timeout: Annotated[Optional[float], typer.Option(help="Stop starting trials after this many seconds.")] = None,
    heartbeat_interval: Annotated[Optional[int], typer.Option(min=1, help="Seconds between trial heartbeats.")] = None,
) -> None:
    """Join a launched study and run its trials until every budget is spent."""
    from spheroid_hpo.worker import run_worker

    if storage is None and study is None:
        raise InputError("pass --storage URL (and --study NAME when it holds several studies)")
    summary = run_worker(
        study=study, storage_url=storage, data_dir=data, artifact_dir=artifacts, runs_dir=runs_dir,
        device=device, threads=threads, worker_index=worker_index, timeout=timeout,
        heartbeat_interval=heartbeat_interval,
    )
    typer.echo(f"worker {worker_index}: ran {summary.trials_run} trials in {summary.seconds:.0f} s")


if __name__ == "__main__":
    main()
