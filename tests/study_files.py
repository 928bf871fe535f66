"""Small study files for tests (import as `from study_files import write_tiny_study`)."""

from __future__ import annotations

from pathlib import Path

TINY_STUDY = """
[study]
name = "{name}"
architectures = ["squeezenet1_1", "resnet18"]
n_trials = {n_trials}

[search_space]
epochs = {{ low = 2, high = 4 }}
lr = {{ low = 1e-4, high = 3e-3, log = true }}
rotation = {{ low = 0.0, high = 20.0 }}
batch_size = {{ low = 8, high = 16 }}

[baseline]
epochs = 3
lr = 1e-3
rotation = 10.0
batch_size = 12

[sampler]
name = "tpe"
seed = 0
n_startup_trials = 2

[pruner]
name = "{pruner}"
n_startup_trials = 1
n_warmup_steps = 1

[data]
image_size = 32

[data.demo]
per_class = 12
size = 32
seed = 0
"""


def write_tiny_study(folder: Path, *, name: str = "tiny", n_trials: int = 3, pruner: str = "median") -> Path:
    """A study file for two fast architectures on 32 px demo data; returns its path."""
    path = Path(folder) / f"{name}.toml"
    path.write_text(TINY_STUDY.format(name=name, n_trials=n_trials, pruner=pruner))
    return path


ONE_ARCHITECTURE_STUDY = """
[study]
name = "{name}"
architectures = ["{architecture}"]
n_trials = {n_trials}

[search_space]
epochs = {epochs}
lr = {{ low = 1e-4, high = 3e-3, log = true }}
rotation = {{ low = 0.0, high = 20.0 }}
batch_size = {{ low = 6, high = 12 }}
{extra_space}

[sampler]
name = "{sampler}"
seed = 0
n_startup_trials = 2

[pruner]
name = "{pruner}"
n_startup_trials = 1
n_warmup_steps = 0
min_resource = 1
reduction_factor = 3

[data]
image_size = 32

[data.demo]
per_class = 12
size = 32
"""


def one_architecture_study(*, name: str = "wiring", architecture: str = "squeezenet1_1", n_trials: int = 2,
                           epochs: int = 1, sampler: str = "tpe", pruner: str = "none", extra_space: str = "") -> str:
    """A study of one architecture on 32 px demo data, without a baseline; ``extra_space`` adds search-space lines."""
    return ONE_ARCHITECTURE_STUDY.format(name=name, architecture=architecture, n_trials=n_trials, epochs=epochs,
                                         sampler=sampler, pruner=pruner, extra_space=extra_space)


def write_one_architecture_study(folder: Path, **options) -> Path:
    """``one_architecture_study(**options)`` written to FOLDER/<name>.toml; returns its path."""
    path = Path(folder) / f"{options.get('name', 'wiring')}.toml"
    path.write_text(one_architecture_study(**options))
    return path


def one_objective_trial(data, folder: Path, params: dict, *, extra_space: str = ""):
    """One enqueued trial of ``params`` through ``build_objective`` (squeezenet1_1, fp32) on
    ``data`` (a ``TrainingData``), in memory; the trial must complete. Returns the FrozenTrial."""
    import optuna
    import torch
    from optuna.artifacts import FileSystemArtifactStore
    from optuna.trial import TrialState

    from spheroid_hpo.tuning.objective import build_objective
    from spheroid_hpo.tuning.study_file import parse_study_text

    config = parse_study_text(one_architecture_study(extra_space=extra_space), source=Path("s.toml"))
    (Path(folder) / "artifacts").mkdir()
    objective = build_objective(
        architecture="squeezenet1_1", data=data, search_space=config.search_space, device=torch.device("cpu"),
        artifact_store=FileSystemArtifactStore(str(Path(folder) / "artifacts")),
        checkpoint_dir=Path(folder) / "checkpoints", precision="fp32",
    )
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(params)
    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    return trial
