"""Where one study's files live on this machine: the runs-folder layout, resolved once.

``runs/<study>/`` holds the SQLite storage (``study.db``), the trials' artifacts, the
checkpoints beside them, this machine's copy of the split, the workers' logs, the report
and the audit. Every command builds one ``Workspace`` from the study name, the runs folder
and whatever the command line gave (``--storage``, ``--artifacts``) and passes that value on,
so the layout is spelled here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.data import DEFAULT_MANIFEST_NAME
from spheroid_hpo.defaults import RUNS_DIR
from spheroid_hpo.errors import InputError

__all__ = ["Workspace"]

STORAGE_FILE = "study.db"


@dataclass(frozen=True)
class Workspace:
    """A study's folders and storage: ``Workspace.of(name, runs_dir=..., storage_url=..., artifact_dir=...)``."""

    study: str
    runs_dir: Path
    storage_url: str  # given (a PostgreSQL URL, say), or the SQLite file in the study's folder
    artifact_dir: Path  # given (a shared volume), or the study's folder's artifacts/

    @classmethod
    def of(cls, study: str, *, runs_dir: Path = RUNS_DIR, storage_url: str | None = None,
           artifact_dir: Path | None = None) -> Workspace:
        """The workspace of ``study`` under ``runs_dir``; a given storage URL or artifact folder wins."""
        runs_dir = Path(runs_dir)
        return cls(
            study=study, runs_dir=runs_dir,
            storage_url=storage_url or cls.default_storage_url(study, runs_dir=runs_dir),
            artifact_dir=Path(artifact_dir) if artifact_dir else runs_dir / study / "artifacts",
        )

    @staticmethod
    def default_storage_url(study: str, *, runs_dir: Path = RUNS_DIR) -> str:
        """``sqlite:///runs/<study>/study.db``: the storage when none is given."""
        return f"sqlite:///{Path(runs_dir) / study / STORAGE_FILE}"

    @property
    def folder(self) -> Path:
        """``runs/<study>/``: the study's own folder on this machine."""
        return self.runs_dir / self.study

    @property
    def storage_file(self) -> Path:
        """The SQLite file of the default storage (whether or not ``storage_url`` names it)."""
        return self.folder / STORAGE_FILE

    @property
    def checkpoints(self) -> Path:
        """The checkpoints folder beside the artifacts: every worker sharing the artifacts shares it."""
        return self.artifact_dir.parent / "checkpoints"

    @property
    def manifest(self) -> Path:
        """This machine's copy of the split recorded on the study."""
        return self.folder / DEFAULT_MANIFEST_NAME

    @property
    def logs(self) -> Path:
        """The launcher's and the workers' logs."""
        return self.folder / "logs"

    @property
    def report(self) -> Path:
        """Where ``spheroid-hpo report`` writes when no --out is given."""
        return self.folder / "report"

    def existing_artifacts(self) -> Path:
        """The artifact folder, which a finished study must have; InputError naming the fix otherwise."""
        if not self.artifact_dir.is_dir():
            raise InputError(f"artifact folder {self.artifact_dir} does not exist; pass --artifacts with the folder "
                             f"the study's workers wrote models to (launch prints it)")
        return self.artifact_dir
