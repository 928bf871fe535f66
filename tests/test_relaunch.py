"""Relaunching a study: an edited study file is refused, and what each trial trained with stays known.

The review of issue 26 relaunched a study after changing ``batch_size = 8`` to 4 and
``rotation = 10.0`` to 170: the launch went on, the stored study file was overwritten, and the
report showed the old best trial (trained with batch 8, rotation 10) as batch 4, rotation 170.
Changing ``lr`` from a range to choices made every new trial fail with no reason recorded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
from study_files import one_architecture_study

from spheroid_hpo.cli import main
from spheroid_hpo.data import TrainingData, load_dataset
from spheroid_hpo.results.family import StudyFamily
from spheroid_hpo.tuning.objective import build_objective
from spheroid_hpo.tuning.study_file import parse_study_text

EDITABLE = """
[study]
name = "edited"
architectures = ["squeezenet1_1"]
n_trials = 2

[search_space]
epochs = { low = 1, high = 2 }
lr = LR
rotation = 10.0
batch_size = 8

[pruner]
name = "none"

[data]
image_size = 32

[data.demo]
per_class = 6
size = 32
"""
RANGE = "{ low = 1e-4, high = 1e-3, log = true }"


def create(monkeypatch, capsys, path: Path, runs: Path, *more: str) -> tuple[int, list[str]]:
    """``spheroid-hpo create --study PATH --runs-dir RUNS`` through the entry point: (exit code, stderr lines)."""
    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", "create", "--study", str(path), "--runs-dir", str(runs), *more])
    with pytest.raises(SystemExit) as exit_info:
        main()
    code = exit_info.value.code
    err = capsys.readouterr().err
    return (0 if code is None else code), [line for line in err.splitlines() if line.strip()]


def test_a_relaunch_with_another_search_space_or_fixed_values_stops_and_names_the_keys(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    path, runs = tmp_path / "edited.toml", tmp_path / "runs"
    path.write_text(EDITABLE.replace("LR", RANGE))
    assert create(monkeypatch, capsys, path, runs)[0] == 0
    url = f"sqlite:///{runs / 'edited' / 'study.db'}"
    stored = optuna.load_study(study_name="edited.squeezenet1_1", storage=url).user_attrs["study_file"]

    # the same file, a larger budget: a relaunch goes on
    assert create(monkeypatch, capsys, path, runs, "--n-trials", "4")[0] == 0

    path.write_text(EDITABLE.replace("LR", RANGE).replace("batch_size = 8", "batch_size = 4")
                    .replace("rotation = 10.0", "rotation = 170.0"))
    code, lines = create(monkeypatch, capsys, path, runs)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "search_space.batch_size 8 -> 4" in lines[0] and "search_space.rotation 10.0 -> 170.0" in lines[0]
    assert "search_space.lr" not in lines[0]  # only the keys that changed
    assert "new name" in lines[0]

    path.write_text(EDITABLE.replace("LR", "{ choices = [0.01, 0.02] }"))
    code, lines = create(monkeypatch, capsys, path, runs)
    assert code == 2 and len(lines) == 1 and "search_space.lr" in lines[0], lines
    study = optuna.load_study(study_name="edited.squeezenet1_1", storage=url)
    assert study.user_attrs["study_file"] == stored  # the refused files were not recorded

    # a new name is a new study, with the edited file
    path.write_text(path.read_text().replace('name = "edited"', 'name = "edited2"'))
    assert create(monkeypatch, capsys, path, runs)[0] == 0


def test_a_study_from_before_recipes_were_recorded_is_checked_against_its_stored_file(
    tmp_path, monkeypatch, capsys
):
    from spheroid_hpo.tuning import records

    monkeypatch.chdir(tmp_path)
    path, runs = tmp_path / "edited.toml", tmp_path / "runs"
    path.write_text(EDITABLE.replace("LR", RANGE))
    assert create(monkeypatch, capsys, path, runs)[0] == 0
    url = f"sqlite:///{runs / 'edited' / 'study.db'}"
    study = optuna.load_study(study_name="edited.squeezenet1_1", storage=url)
    storage = study._storage
    storage.set_study_user_attr(study._study_id, records.RECIPE, None)  # as an older version left it
    path.write_text(EDITABLE.replace("LR", RANGE).replace("batch_size = 8", "batch_size = 4"))
    code, lines = create(monkeypatch, capsys, path, runs)
    assert code == 2 and "search_space.batch_size 8 -> 4" in lines[0], lines


def test_a_trial_records_its_fixed_values_and_the_report_shows_those(demo_dir, tmp_path):
    """Even where the study's file says otherwise (a study edited before relaunches were checked)."""
    dataset = load_dataset(demo_dir, image_size=32, manifest_path=tmp_path / "splits.csv", splits=("train", "val"))
    config = parse_study_text(one_architecture_study(epochs=1), source=Path("wiring.toml"))
    (tmp_path / "artifacts").mkdir()
    objective = build_objective(
        architecture="squeezenet1_1",
        data=TrainingData(train=dataset.train, val=dataset.val, class_names=dataset.class_names, image_size=32),
        search_space=config.search_space, device=torch.device("cpu"),
        artifact_store=FileSystemArtifactStore(str(tmp_path / "artifacts")),
        checkpoint_dir=tmp_path / "checkpoints", precision="fp32", weights=str(tmp_path / "gone.pt"),
    )
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"lr": 2e-3, "rotation": 10.0, "batch_size": 8})
    study.optimize(objective, n_trials=1, catch=(Exception,))  # fails fast: the weights file is gone
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["hyperparams"]["epochs"] == 1  # recorded before training started

    edited = parse_study_text(one_architecture_study(epochs=5), source=Path("wiring.toml"))
    family = StudyFamily(name="wiring", config=edited, storage_url="", storage=None, studies={}, data=None,
                         manifest_csv="")
    assert family.params(trial, "squeezenet1_1") == {"epochs": 1, "lr": 2e-3, "rotation": 10.0, "batch_size": 8}


# --- real launches: three in a row, and two at once -------------------------------------------------------

LAUNCHED = """
[study]
name = "NAME"
architectures = ["squeezenet1_1"]
n_trials = N_TRIALS

[search_space]
epochs = { low = 1, high = 2 }
lr = { low = 1e-4, high = 1e-3, log = true }
rotation = 10.0
batch_size = 8

[baseline]
epochs = 1
lr = 1e-4

[pruner]
name = "none"

[data]
image_size = 32

[data.demo]
per_class = 6
size = 32
"""


def launch_command(path: Path, runs: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "spheroid_hpo", "launch", "--study", str(path), "--runs-dir", str(runs), *more]


def trials_of(runs: Path, name: str) -> list:
    return optuna.load_study(study_name=f"{name}.squeezenet1_1",
                             storage=f"sqlite:///{runs / name / 'study.db'}").get_trials(deepcopy=False)


@pytest.mark.slow
def test_three_launches_never_run_the_same_point_twice_and_keep_each_launchs_log(tmp_path):
    """The review's reproduction (H2): launch, then --n-trials 3, then 4 gave trials #1, #2, #3 identical."""
    path, runs = tmp_path / "rs.toml", tmp_path / "runs"
    path.write_text(LAUNCHED.replace("NAME", "rs").replace("N_TRIALS", "2"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for more in ((), ("--n-trials", "3"), ("--n-trials", "4")):
        result = subprocess.run(launch_command(path, runs, *more), cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    trials = trials_of(runs, "rs")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == 4, points
    logs = runs / "rs" / "logs"
    assert sorted(p.name for p in logs.glob("worker-*.log")) == ["worker-0.log", "worker-1.log", "worker-2.log"]


@pytest.mark.slow
def test_two_launches_at_once_share_no_worker_index_log_or_point(tmp_path):
    """The review started two launches on one new study: both workers were index 0, wrote worker-0.log,
    and proposed the same point."""
    path, runs = tmp_path / "dual.toml", tmp_path / "runs"
    path.write_text(LAUNCHED.replace("NAME", "dual").replace("N_TRIALS", "3"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launches = [subprocess.Popen(launch_command(path, runs), cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
    outputs = [launch.communicate(timeout=300)[0] for launch in launches]
    assert [launch.returncode for launch in launches] == [0, 0], outputs
    logs = runs / "dual" / "logs"
    assert sorted(p.name for p in logs.glob("worker-*.log")) == ["worker-0.log", "worker-1.log"]
    trials = trials_of(runs, "dual")
    assert 3 <= len(trials) <= 4  # each launcher's worker may run one past the budget, never fewer
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == len(points), points
    assert sum(1 for t in trials if t.user_attrs.get("baseline")) == 1
