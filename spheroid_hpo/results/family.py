"""The study family a report reads: one Optuna study per architecture, and what they were tuned on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from spheroid_hpo.data import Dataset, DataSource, data_folder, load_recorded_dataset
from spheroid_hpo.defaults import RUNS_DIR
from spheroid_hpo.errors import InputError
from spheroid_hpo.training.architectures import applicable_params
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.tuning import records
from spheroid_hpo.tuning.records import best_trial
from spheroid_hpo.tuning.storage import masked_url, open_storage, require_existing_sqlite
from spheroid_hpo.tuning.studies import find_study_family
from spheroid_hpo.tuning.study_file import StudyConfig
from spheroid_hpo.tuning.workspace import Workspace

__all__ = ["StudyFamily", "open_family", "require_best_trials"]


@dataclass(frozen=True)
class StudyFamily:
    """The per-architecture studies of one study file, loaded from storage."""

    name: str
    config: StudyConfig
    storage_url: str
    storage: BaseStorage
    studies: dict[str, optuna.Study]  # architecture -> its study, in the study file's order
    data: DataSource  # what the studies were created on
    manifest_csv: str  # the split every trial trained and validated on

    def workspace(self, *, runs_dir: Path, artifact_dir: Path | None = None) -> Workspace:
        """The study's folders on this machine (``artifact_dir`` given on the command line wins)."""
        return Workspace.of(self.name, runs_dir=runs_dir, storage_url=self.storage_url, artifact_dir=artifact_dir)

    def trials(self, architecture: str) -> list[FrozenTrial]:
        """Every trial of ``architecture``'s study, in creation order."""
        return self.studies[architecture].get_trials(deepcopy=False)

    def best_overall(self) -> tuple[str, FrozenTrial] | None:
        """The best completed trial over all architectures (``best_trial``'s rule; on a tie the
        architecture listed first in the study file), or None when none has completed."""
        candidates = [(architecture, trial) for architecture in self.config.architectures
                      if (trial := best_trial(self.trials(architecture))) is not None]
        return max(candidates, key=lambda pair: (pair[1].value, -self.config.architectures.index(pair[0]),
                                                 -pair[1].number), default=None)

    def data_folder(self, *, data_dir: Path | None, runs_dir: Path) -> Path:
        """This machine's copy of the study's data: ``data_dir``, the recorded folder, or the demo set rebuilt."""
        return data_folder(self.data.path, demo=self.data.demo, data_dir=data_dir, runs_dir=runs_dir,
                           owner=f"study {self.name}")

    def load_data(self, folder: Path, *, manifest_path: Path, splits: tuple[str, ...] = ("test",)) -> Dataset:
        """Decode ``splits`` of ``folder`` with the study's own split (written to ``manifest_path``);
        refuse a folder that is not the study's data."""
        return load_recorded_dataset(
            self.data, owner=f"study {self.name}", manifest_csv=self.manifest_csv, manifest_path=manifest_path,
            data_dir=folder, runs_dir=Path("."), splits=splits,
        )

    def params(self, trial: FrozenTrial, architecture: str) -> dict[str, float | str]:
        """The hyperparameters the study names (searched or fixed) that the trial of ``architecture``
        trained with, as the trial recorded them, in search-space order: what tables and best.toml show.

        Parameters that do not apply to the architecture (BatchNorm momentum of SqueezeNet) are
        left out, even from older trials.
        """
        trained = records.trained_params(trial)
        applies = applicable_params(architecture)
        return {spec.name: trained[spec.name] for spec in self.config.search_space
                if trained.get(spec.name) is not None and spec.name in applies}

    @staticmethod
    def hyperparams(trial: FrozenTrial) -> Hyperparams:
        """The whole configuration the trial trained with, as it recorded it: what a retraining trains."""
        return records.trained_hyperparams(trial)


def open_family(*, storage_url: str | None, study: str | None, runs_dir: Path = RUNS_DIR) -> StudyFamily:
    """Load study ``study`` from ``storage_url`` (default: the study's SQLite file under ``runs_dir``)."""
    if storage_url is None:
        if study is None:
            sqlite_file = Workspace.of("NAME", runs_dir=runs_dir).storage_file
            raise InputError(f"pass --study NAME (and --storage URL unless it is in {sqlite_file})")
        storage_url = Workspace.default_storage_url(study, runs_dir=runs_dir)
    require_existing_sqlite(storage_url)
    storage = open_storage(storage_url, heartbeat_interval=None)
    config, _ = find_study_family(storage, study)
    studies = {}
    for architecture in config.architectures:
        try:
            studies[architecture] = optuna.load_study(study_name=config.study_name(architecture), storage=storage)
        except KeyError:
            raise InputError(
                f"study {config.study_name(architecture)} is missing from {masked_url(storage_url)}; "
                f"run `spheroid-hpo launch --study studies/{config.name}.toml` to create it"
            ) from None
    first = next(iter(studies.values()))
    data, manifest = records.data_source(first.user_attrs), records.manifest_csv(first.user_attrs)
    if data is None or manifest is None:
        raise InputError(
            f"study {first.study_name} records no data or split; it was not made by `spheroid-hpo launch`, "
            f"so it cannot be reported"
        )
    return StudyFamily(
        name=config.name, config=config, storage_url=storage_url, storage=storage, studies=studies,
        data=data, manifest_csv=manifest,
    )


def require_best_trials(family: StudyFamily) -> dict[str, FrozenTrial]:
    """Each architecture's best trial; InputError when one has none, since a comparison needs all."""
    best = {}
    for architecture in family.config.architectures:
        trials = family.trials(architecture)
        trial = best_trial(trials)
        if trial is None:
            states = ", ".join(
                f"{sum(t.state == state for t in trials)} {state.name.lower()}"
                for state in (TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)
            )
            raise InputError(
                f"architecture {architecture} of study {family.name} has no completed trial yet ({len(trials)} "
                f"trials: {states}); run more with `spheroid-hpo launch --study studies/{family.name}.toml` "
                f"(finished trials are kept), then report again"
            )
        best[architecture] = trial
    return best
