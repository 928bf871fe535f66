"""What an audit retrains, and on which images: a study's winner or a ``train`` run folder, resolved once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.data import (
    DEFAULT_SPLIT,
    DataSource,
    SplitSpec,
    data_folder,
    load_recorded_dataset,
    prepare_split,
)
from spheroid_hpo.errors import InputError
from spheroid_hpo.training.hyperparams import TUNABLE_PARAMS, Hyperparams
from spheroid_hpo.training.run import METRICS_FILE

AUDIT_DIR = "audit"  # beside the study's report (runs/<study>/audit) or inside the run folder


@dataclass(frozen=True)
class AuditPlan:
    """The configuration to retrain and the data it was chosen on, whatever the input was."""

    description: str  # "trial 3 (squeezenet1_1) of study ci", for messages and the page
    data: DataSource  # the recorded data; its fingerprint refuses another folder
    folder: Path  # this machine's copy of it
    manifest_csv: str  # the split the configuration trained and validated on
    architecture: str
    hyperparams: Hyperparams
    precision: str
    weights: str
    seed: int
    split_seed: int
    cv_folds: int | None  # the study's own folds, when it was cross-validated
    out_dir: Path  # where the audit goes when no --out is given

    def load_train_val(self, manifest_path: Path):
        """Decode the train and validation splits (never test) of the recorded split; refuse other data."""
        return load_recorded_dataset(
            self.data, owner=self.description, manifest_csv=self.manifest_csv, manifest_path=manifest_path,
            data_dir=self.folder, runs_dir=Path("."), splits=("train", "val"),
        )


def plan_from_study(*, study: str | None, storage_url: str | None, runs_dir: Path, data_dir: Path | None) -> AuditPlan:
    """The best trial over all architectures of study ``study``, as ``report`` and ``export-best`` find it."""
    from spheroid_hpo.results.family import open_family  # optuna, only for a study

    family = open_family(storage_url=storage_url, study=study, runs_dir=runs_dir)
    best = family.best_overall()
    if best is None:
        raise InputError(f"study {family.name} has no completed trial yet; run `spheroid-hpo launch --study "
                         f"studies/{family.name}.toml` until one completes, then audit its winner")
    architecture, trial = best
    config = family.config
    return AuditPlan(
        description=f"trial {trial.number} ({architecture}) of study {family.name}", data=family.data,
        folder=family.data_folder(data_dir=data_dir, runs_dir=runs_dir), manifest_csv=family.manifest_csv,
        architecture=architecture, hyperparams=family.hyperparams(trial),
        precision=config.training.precision, weights=config.training.weights, seed=config.training.seed,
        split_seed=config.data.split.seed, cv_folds=config.data.cv_folds,
        out_dir=family.workspace(runs_dir=runs_dir).folder / AUDIT_DIR,
    )


def plan_from_run(run_dir: Path, *, data_dir: Path | None) -> AuditPlan:
    """The configuration a ``train`` run folder recorded in its metrics.json, on the split it names."""
    run_dir = Path(run_dir)
    metrics_file = run_dir / METRICS_FILE
    if not metrics_file.is_file():
        raise InputError(f"{run_dir} is not a run folder (no {METRICS_FILE}); pass a folder written by "
                         f"`spheroid-hpo train`, or --study NAME")
    try:
        metrics = json.loads(metrics_file.read_text())
        config = metrics["config"]
        manifest = Path(metrics["split_manifest"])
        fingerprint = metrics["data_fingerprint"]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{metrics_file} is not a metrics.json written by `spheroid-hpo train` ({error!r}); "
                         f"retrain the run folder") from None
    if not manifest.is_file():
        raise InputError(f"the split {manifest} that {metrics_file} names is missing; the audit needs the run's own "
                         f"split: restore it, or retrain the run folder")
    description = f"run folder {run_dir}"
    source = DataSource(path=config["data_dir"], demo=None, image_size=int(config["image_size"]),
                        fingerprint=fingerprint)
    return AuditPlan(
        description=description, data=source,
        folder=data_folder(source.path, data_dir=data_dir, runs_dir=Path("."), owner=description),
        manifest_csv=manifest.read_text(), architecture=config["arch"],
        hyperparams=Hyperparams.from_params({k: v for k, v in config.items() if k in TUNABLE_PARAMS}),
        precision=config["precision"], weights=config["weights"], seed=int(config["seed"]),
        split_seed=int(config["split"]["split_seed"] if "split" in config else config["seed"]), cv_folds=None,
        out_dir=run_dir / AUDIT_DIR,
    )


def plan_for_folder(folder: Path, *, architecture: str, hyperparams: Hyperparams, image_size: int,
                    split: SplitSpec = DEFAULT_SPLIT, precision: str = "fp32",
                    weights: str = "none", seed: int = 0, out_dir: Path | None = None) -> AuditPlan:
    """A configuration (a best.toml's, say) on ``folder`` split afresh with ``split``'s settings;
    for measuring the audit on planted errors. The split is written to ``folder``'s own manifest."""
    folder = Path(folder)
    plan = prepare_split(folder, split)
    return AuditPlan(
        description=f"{architecture} on {folder}",
        data=DataSource(path=str(folder), demo=None, image_size=image_size, fingerprint=plan.fingerprint),
        folder=folder, manifest_csv=plan.manifest_path.read_text(), architecture=architecture,
        hyperparams=hyperparams, precision=precision, weights=weights, seed=seed, split_seed=split.seed,
        cv_folds=None, out_dir=Path(out_dir) if out_dir is not None else folder.parent / AUDIT_DIR,
    )
