"""Bad input through the real command line: one line naming the problem and the fix, exit code 2.

``CASES`` is the table: add a row for every new way a user (or a file someone sent)
can get it wrong. Each row runs ``spheroid-hpo`` in this process through ``main()``,
the entry point of the console script, so a traceback fails the test as an exception.
Faults that are about processes (a paused worker, racing launches) follow the table
and use real processes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
import tifffile
import torch
from optuna.trial import TrialState
from waiting import tail, wait_for

from spheroid_hpo.cli import main
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.models import create_model
from spheroid_hpo.training.saved_model import ModelInfo, save_model
from spheroid_hpo.tuning import storage as storage_module

ROOT = Path(__file__).resolve().parents[1]

STUDY = """
[study]
name = "bad"
architectures = [{architectures}]
n_trials = {n_trials}

[search_space]
epochs = {epochs}
lr = {lr}
rotation = {rotation}
batch_size = {batch_size}
bn_momentum = {bn_momentum}

[sampler]
seed = {seed}

[pruner]
name = "none"

[data]
image_size = {image_size}

[data.demo]
per_class = {per_class}
size = 32
"""
GOOD = dict(architectures='"squeezenet1_1"', n_trials=1, epochs=1, lr=1e-3, rotation=10.0, batch_size=4,
            bn_momentum=0.1, seed=0, image_size=32, per_class=6)


def study_file(folder: Path, **changes) -> Path:
    path = folder / "bad.toml"
    path.write_text(STUDY.format(**{**GOOD, **changes}))
    return path


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]  # "{tmp}", "{data}", "{model}" and "{study:key=value,...}" are filled in
    phrase: str  # the message must name the problem with this text


def _study(spec: str) -> str:
    changes = dict(item.split("=", 1) for item in spec.split(";"))
    return "{study:" + ";".join(f"{k}={v}" for k, v in changes.items()) + "}"


CASES = {
    # 2. fixed values get the checks ranges get
    "fixed batch_size 0": Case(("create", "--study", _study("batch_size=0")), "batch_size = 0"),
    "fixed lr 0": Case(("create", "--study", _study("lr=0.0")), "lr = 0.0"),
    "fixed lr negative": Case(("create", "--study", _study("lr=-1e-3")), "lr = -0.001"),
    "fixed lr nan": Case(("create", "--study", _study("lr=nan")), "lr = nan"),
    "fixed epochs 0": Case(("create", "--study", _study("epochs=0")), "epochs = 0"),
    "fixed rotation negative": Case(("create", "--study", _study("rotation=-30.0")), "rotation = -30.0"),
    "fixed bn_momentum 0": Case(("create", "--study", _study("bn_momentum=0.0")), "bn_momentum = 0.0"),
    "range lr high nan": Case(("create", "--study", _study("lr={ low = 1e-4, high = nan }")), "lr = nan"),
    "sampler seed negative": Case(("create", "--study", _study("seed=-1")), "sampler.seed"),
    "image_size huge": Case(("create", "--study", _study("image_size=100000")), "image_size"),
    "n_trials absurd": Case(("create", "--study", _study("n_trials=1000000000")), "n_trials"),
    "alexnet at 32 px": Case(("create", "--study", _study('architectures="alexnet";image_size=32')),
                             "alexnet needs images of at least 64 px"),
    "squeezenet at 16 px": Case(("create", "--study", _study("image_size=16")),
                                "squeezenet1_1 needs images of at least 32 px"),
    "demo per_class absurd": Case(("create", "--study", _study("per_class=100000000")), "per_class"),
    # 3. batch size 1 is refused everywhere, with the reason
    "train batch size 1": Case(("train", "--data", "{data}", "--batch-size", "1", "--out", "{tmp}/t"),
                               "batch_size must lie in [2, 4096] (BatchNorm"),
    "train alexnet at 32 px": Case(("train", "--data", "{data}", "--arch", "alexnet", "--image-size", "32",
                                    "--out", "{tmp}/t"), "at least 64 px"),
    "train image size huge": Case(("train", "--data", "{data}", "--image-size", "100000", "--out", "{tmp}/t"),
                                  "100000"),
    "train image size tiny": Case(("train", "--data", "{data}", "--image-size", "8", "--out", "{tmp}/t"),
                                  "needs images of at least 32 px"),
    # 7. each of these printed a traceback
    "split manifest is a folder": Case(("train", "--data", "{data}", "--split-manifest", "{tmp}",
                                        "--out", "{tmp}/t"), "is a folder"),
    "symlink loop in data folder": Case(("check-data", "{loop}"), "Too many levels of symbolic links"),
    "predict --out is a folder": Case(("predict", "{data}", "--model", "{model}", "--out", "{tmp}"), "is a folder"),
    "model.pt lacks keys": Case(("predict", "{data}", "--model", "{model:no_classes}", "--out", "{tmp}/p.csv"),
                                "missing or malformed"),
    "model.pt wrong weights": Case(("predict", "{data}", "--model", "{model:wrong_weights}",
                                    "--out", "{tmp}/p.csv"), "do not fit squeezenet1_1"),
    "model.pt image_size big": Case(("predict", "{data}", "--model", "{model:big}", "--out", "{tmp}/p.csv"),
                                    "'big'"),
    "model.pt image_size huge": Case(("predict", "{data}", "--model", "{model:huge}", "--out", "{tmp}/p.csv"),
                                     "image size 4000 is not a whole number of pixels from 16 to 2048"),
    "report port not a number": Case(("report", "--storage", "postgresql+psycopg://u@h:abc/db", "--study", "x"),
                                     "is not a database URL"),
    "export-best port not a number": Case(("export-best", "--storage", "postgresql+psycopg://u@h:abc/db"),
                                          "is not a database URL"),
    "dashboard port not a number": Case(("dashboard", "--storage", "postgresql+psycopg://u@h:abc/db"),
                                        "is not a database URL"),
    # 8. the demo generator bounds its own settings
    "demo-data per_class absurd": Case(("demo-data", "{tmp}/demo", "--per-class", "100000000"), "per_class"),
    "demo-data size absurd": Case(("demo-data", "{tmp}/demo", "--size", "100000"), "size"),
    # issue 26: learning rates are finite, as the study file bounds them
    "train lr inf": Case(("train", "--data", "{data}", "--lr", "inf", "--out", "{tmp}/t"),
                         "lr must lie in (0.0, 1.0] (Adam's learning rate is positive), but got lr = inf"),
    "train lr 1e308": Case(("train", "--data", "{data}", "--lr", "1e308", "--out", "{tmp}/t"), "lr = 1e+308"),
    # small ones
    "hint names --runs-dir": Case(("report", "--runs-dir", "{tmp}/elsewhere"), "elsewhere/NAME/study.db"),
    # issue 26, study files and launch: each of these was accepted (or a traceback)
    "step nan": Case(("create", "--study", _study("lr={ low = 1e-4, high = 1e-3, step = nan }")),
                     "lr.step must be a positive number"),
    "step inf": Case(("create", "--study", _study("lr={ low = 1e-4, high = 1e-3, step = inf }")),
                     "lr.step must be a positive number"),
    "step larger than the range": Case(("create", "--study", _study("epochs={ low = 1, high = 2, step = 1000 }")),
                                       "epochs.step = 1000 must divide high - low = 1"),
    "range off the step grid": Case(("create", "--study", _study("epochs={ low = 1, high = 4, step = 2 }")),
                                    "epochs.step = 2 must divide high - low = 3"),
    "baseline off the step grid": Case(("create", "--study", _study(
        "bn_momentum=0.1\n[baseline]\nepochs = 2;epochs={ low = 1, high = 3, step = 2 }")),
        "baseline.epochs = 2 lies outside the search space (its range, choices or step)"),
    "launch --timeout nan": Case(("launch", "--study", _study("n_trials=1"), "--timeout", "nan"),
                                 "--timeout must be a number of seconds from 1 to"),
    "launch --timeout inf": Case(("launch", "--study", _study("n_trials=1"), "--timeout", "inf"), "got inf"),
    "launch --timeout negative": Case(("launch", "--study", _study("n_trials=1"), "--timeout", "-5"), "got -5"),
    "worker --timeout nan": Case(("worker", "--study", "bad", "--timeout", "nan"), "--timeout must be a number"),
    "launch --n-trials absurd": Case(("launch", "--study", _study("n_trials=1"), "--n-trials", "1000000000"),
                                     "--n-trials must be from 1 to 100000"),
    "launch --workers absurd": Case(("launch", "--study", _study("n_trials=1"), "--workers", "100000"),
                                    "per CPU core"),
    "launch --gpus it lacks": Case(("launch", "--study", _study("n_trials=1"), "--gpus", "99"),
                                   "--gpus names GPU 99, but this machine has"),
    "launch --runs-dir under a file": Case(("launch", "--study", _study("n_trials=1"), "--runs-dir",
                                            "{tmp}/bad.toml/runs"), "cannot write in --runs-dir"),
}


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run ``spheroid-hpo ARGS`` through the console-script entry point; (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def create_in_a_child(path: Path, runs: Path) -> str:
    """``spheroid-hpo create --study PATH --runs-dir RUNS`` in a new process, which must succeed; its output."""
    created = subprocess.run([sys.executable, "-m", "spheroid_hpo", "create", "--study", str(path),
                              "--runs-dir", str(runs)], cwd=path.parent, capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stdout + created.stderr
    return created.stdout + created.stderr


def _model_file(folder: Path, kind: str) -> Path:
    path = folder / f"model-{kind}.pt"
    info = ModelInfo(architecture="squeezenet1_1", class_names=("a", "b"), image_size=32,
                     mean=(0.5,) * 3, std=(0.25,) * 3, bn_momentum=None)
    save_model(path, create_model("squeezenet1_1", num_classes=2), info)
    payload = torch.load(path, weights_only=True)
    if kind == "no_classes":
        del payload["class_names"]
    elif kind == "wrong_weights":
        payload["state_dict"] = create_model("resnet18", num_classes=2).state_dict()
    elif kind == "big":
        payload["image_size"] = "big"
    elif kind == "huge":
        payload["image_size"] = 4000
    torch.save(payload, path)
    return path


def _fill(arg: str, tmp: Path, data: Path) -> str:
    if arg.startswith("{study:"):
        changes = dict(item.split("=", 1) for item in arg[len("{study:"):-1].split(";"))
        return str(study_file(tmp, **changes))
    if arg.startswith("{model"):
        return str(_model_file(tmp, arg.strip("{}").partition(":")[2] or "good"))
    if arg == "{loop}":
        loop = tmp / "loop"
        loop.mkdir()
        for name in ("a", "b"):
            (loop / name).mkdir()
        os.symlink("x2", loop / "x1")
        os.symlink("x1", loop / "x2")
        return str(loop)
    return arg.format(tmp=tmp, data=data)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, demo_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [_fill(arg, tmp_path, demo_dir) for arg in case.args]
    code, err = run_cli(monkeypatch, capsys, *args)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")
             and "decoding images" not in line]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.phrase in lines[0], err
    assert not (tmp_path / "runs").exists()  # refused before anything was written


# --- 1. checkpoints never leak between studies ------------------------------------------------------------


BOTH = """
[study]
name = "{name}"
architectures = ["squeezenet1_1"]
n_trials = 1

[search_space]
epochs = {epochs}
lr = {lr}
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


@pytest.mark.slow
def test_studies_sharing_an_artifact_folder_do_not_resume_each_others_checkpoints(tmp_path):
    """Study B must train from scratch even with study A's checkpoint where the old layout looked."""
    from spheroid_hpo.training.loop import train

    shared = tmp_path / "shared" / "artifacts"
    # Study A's checkpoint of trial 0 after 3 epochs, at <artifacts>/../checkpoints/<arch>/trial-0.pt.
    foreign = shared.parent / "checkpoints" / "squeezenet1_1" / "trial-0.pt"
    model = create_model("squeezenet1_1", num_classes=4)
    images, labels = torch.rand(8, 3, 32, 32), torch.arange(8) % 4
    train(model, train_images=images, train_labels=labels, val_images=images, val_labels=labels, num_classes=4,
          hyperparams=Hyperparams(epochs=3, lr=1e-3, batch_size=4, rotation=0.0), seed=0, checkpoint_path=foreign,
          checkpoint_tag={"study": "a.squeezenet1_1-abc", "trial": 0, "params": {}})
    path = tmp_path / "b.toml"
    path.write_text(BOTH.format(name="b", epochs=2, lr=1e-5))
    result = subprocess.run(
        [sys.executable, "-m", "spheroid_hpo", "launch", "--study", str(path), "--runs-dir", str(tmp_path / "runs"),
         "--artifacts", str(shared)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (trial,) = optuna.load_study(study_name="b.squeezenet1_1",
                                 storage=f"sqlite:///{tmp_path / 'runs' / 'b' / 'study.db'}").trials
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["epochs_restored"] == 0
    assert trial.user_attrs["epochs_trained"] == 2
    assert foreign.exists()  # B never deletes a checkpoint that is not its own


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    from spheroid_hpo.training.loop import CheckpointMismatch, train

    checkpoint = tmp_path / "trial-0.pt"
    images, labels = torch.rand(8, 3, 32, 32), torch.arange(8) % 4

    def run(tag):
        return train(create_model("squeezenet1_1", num_classes=4), train_images=images, train_labels=labels,
                     val_images=images, val_labels=labels, num_classes=4,
                     hyperparams=Hyperparams(epochs=1, lr=1e-3, batch_size=4, rotation=0.0),
                     seed=0, checkpoint_path=checkpoint, checkpoint_tag=tag)

    run({"study": "a-1", "trial": 0, "params": {"lr": 1e-3}})
    with pytest.raises(CheckpointMismatch, match="belongs to another run"):
        run({"study": "a-2", "trial": 0, "params": {"lr": 1e-3}})  # same name, study re-created
    with pytest.raises(CheckpointMismatch):
        run({"study": "a-1", "trial": 0, "params": {"lr": 1e-5}})


# --- 2. a study that cannot train does not "finish" ---------------------------------------------------------


@pytest.mark.slow
def test_launch_fails_and_says_why_when_every_trial_failed(tmp_path):
    """Also the small one: fail_reason is recorded when a trial fails.

    The failure: a stale checkpoint of another run where the study's first trial keeps its
    own, which the trial refuses to resume (and leaves in place) rather than train from.
    """
    from spheroid_hpo.training.loop import train
    from spheroid_hpo.tuning.studies import checkpoint_dir
    from spheroid_hpo.tuning.workspace import Workspace

    path = tmp_path / "hopeless.toml"
    path.write_text(BOTH.format(name="hopeless", epochs=1, lr=1e-3))
    runs = tmp_path / "runs"
    create_in_a_child(path, runs)
    url = f"sqlite:///{runs / 'hopeless' / 'study.db'}"
    study = optuna.load_study(study_name="hopeless.squeezenet1_1", storage=url)
    stale = checkpoint_dir(study, Workspace.of("hopeless", runs_dir=runs).checkpoints) / "trial-0.pt"
    images, labels = torch.rand(8, 3, 32, 32), torch.arange(8) % 4
    train(create_model("squeezenet1_1", num_classes=4), train_images=images, train_labels=labels,
          val_images=images, val_labels=labels, num_classes=4,
          hyperparams=Hyperparams(epochs=1, lr=1e-3, batch_size=4, rotation=0.0), seed=0,
          checkpoint_path=stale, checkpoint_tag={"study": "another", "trial": 0, "params": {}})

    result = subprocess.run(
        [sys.executable, "-m", "spheroid_hpo", "launch", "--study", str(path), "--runs-dir", str(runs)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "every trial of squeezenet1_1 failed" in output
    assert "belongs to another run" in output  # the reason, from the trial's fail_reason
    (trial,) = optuna.load_study(study_name="hopeless.squeezenet1_1", storage=url).trials
    assert trial.state == TrialState.FAIL
    assert "CheckpointMismatch" in trial.user_attrs["fail_reason"]
    assert stale.exists()  # not this trial's to delete


def _weights_file(folder: Path, kind: str) -> str:
    """A ``[training] weights`` value that cannot start squeezenet1_1."""
    if kind == "junk":
        (folder / "junk.pt").write_bytes(b"not a file torch.save wrote")
    elif kind == "resnet18":
        torch.save(create_model("resnet18", num_classes=4).state_dict(), folder / "resnet18.pt")
    return f"{kind}.pt"


WEIGHTS_CASES = {
    "missing": "weights file 'missing.pt' does not exist",
    "junk": "cannot read weights file junk.pt",
    "resnet18": "weights file resnet18.pt does not fit squeezenet1_1",
}


@pytest.mark.parametrize("kind", list(WEIGHTS_CASES))
def test_weights_that_cannot_start_training_stop_launch_before_the_storage_is_created(
    kind, tmp_path, monkeypatch, capsys
):
    """Once, every trial failed on such a file, one after another, each only in a worker's log."""
    monkeypatch.chdir(tmp_path)
    path = study_file(tmp_path)
    path.write_text(path.read_text() + f'\n[training]\nweights = "{_weights_file(tmp_path, kind)}"\n')
    code, err = run_cli(monkeypatch, capsys, "launch", "--study", str(path), "--runs-dir", str(tmp_path / "runs"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert WEIGHTS_CASES[kind] in lines[0], err
    assert not (tmp_path / "runs" / "bad" / "study.db").exists()  # refused before the storage was created


def test_a_worker_without_the_weights_file_stops_before_taking_a_trial(tmp_path, monkeypatch, capsys):
    """The study's weights file was there when it was created, not on this worker's machine."""
    weights = tmp_path / "start.pt"
    torch.save(create_model("squeezenet1_1", num_classes=4).state_dict(), weights)
    path = tmp_path / "far.toml"
    path.write_text(BOTH.format(name="far", epochs=1, lr=1e-3) + f'\n[training]\nweights = "{weights}"\n')
    runs = tmp_path / "runs"
    code, err = run_cli(monkeypatch, capsys, "create", "--study", str(path), "--runs-dir", str(runs))  # here: the
    assert code == 0, err  # worker below is the process this test is about
    weights.unlink()
    url = f"sqlite:///{runs / 'far' / 'study.db'}"
    result = subprocess.run([sys.executable, "-m", "spheroid_hpo", "worker", "--storage", url,
                             "--runs-dir", str(runs)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip().startswith("error:")]
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and f"weights file '{weights}' does not exist" in lines[0], result.stderr
    assert optuna.load_study(study_name="far.squeezenet1_1", storage=url).trials == []  # no trial spent


# --- 3. an epoch that sees no training image raises ---------------------------------------------------------


def test_an_epoch_without_a_training_image_raises():
    from spheroid_hpo.errors import InputError
    from spheroid_hpo.training.loop import train

    one = torch.rand(1, 3, 32, 32)
    with pytest.raises(InputError, match="trained on no image"):
        train(create_model("squeezenet1_1", num_classes=2), train_images=one, train_labels=torch.tensor([0]),
              val_images=one, val_labels=torch.tensor([0]), num_classes=2,
              hyperparams=Hyperparams(epochs=1, lr=1e-3, batch_size=4, rotation=0.0),
              seed=0)


# --- 4. a worker paused past its heartbeat ---------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_whose_trial_was_taken_over_stops_it_quietly(tmp_path):
    """Worker A is paused (SIGSTOP) until B retries its trial; woken, A writes nothing and exits 0."""
    path = tmp_path / "zombie.toml"
    path.write_text(BOTH.format(name="zombie", epochs=40, lr=1e-3))
    runs = tmp_path / "runs"
    url = f"sqlite:///{runs / 'zombie' / 'study.db'}"
    create_in_a_child(path, runs)
    worker = [sys.executable, "-m", "spheroid_hpo", "worker", "--storage", url, "--runs-dir", str(runs),
              "--heartbeat-interval", "1"]
    a = subprocess.Popen([*worker, "--worker-index", "0"], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    b = None
    try:
        study = optuna.load_study(study_name="zombie.squeezenet1_1", storage=url)

        def running_epochs() -> int:
            trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            return max((len(t.intermediate_values) for t in trials), default=0)

        def explain() -> str:
            trials = [(t.number, t.state.name, len(t.intermediate_values)) for t in study.get_trials(deepcopy=False)]
            lines = [f"trials (number, state, epochs reported): {trials}"]
            for name, process in (("A", a), ("B", b)):
                if process is not None:
                    code = process.poll()
                    output = tail(process.communicate()[0]) if code is not None else "(still running)"
                    lines.append(f"worker {name}: exit {code}; output: {output}")
            return "\n".join(lines)

        # Generous limits: beside another job a worker takes minutes to start and train its first epochs.
        wait_for(lambda: running_epochs() >= 2, timeout=300, what="worker A to train two epochs", explain=explain)
        os.kill(a.pid, signal.SIGSTOP)
        time.sleep(6)  # past the grace period of four heartbeats: what the test is about, not a wait for a state
        b = subprocess.Popen([*worker, "--worker-index", "1"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: len(study.get_trials(deepcopy=False)) == 2 and running_epochs() >= 1, timeout=300,
                 what="worker B to run the retry", explain=explain)
        os.kill(a.pid, signal.SIGCONT)
        a_output, _ = a.communicate(timeout=300)
        b_output, _ = b.communicate(timeout=300)
    finally:
        os.kill(a.pid, signal.SIGCONT) if a.poll() is None else None
        for process in (a, b):
            if process is not None and process.poll() is None:
                process.kill()
    assert a.returncode == 0, a_output
    assert "Traceback" not in a_output and "Cannot tell" not in a_output, a_output
    assert "taken over" in a_output
    assert b.returncode == 0, b_output
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert not list((runs / "zombie" / "checkpoints").rglob("*.pt*"))  # no stale checkpoint left behind


# --- 5. a decompression bomb is skipped with one warning ------------------------------------------------------


def test_a_decompression_bomb_is_skipped_with_one_warning(tmp_path, demo_dir, monkeypatch, capsys):
    data = tmp_path / "data"
    for folder in demo_dir.iterdir():
        if folder.is_dir():
            (data / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:4]:
                (data / folder.name / image.name).write_bytes(image.read_bytes())
    bomb = data / "0_background" / "bomb.tif"
    # 400 million pixels in a few hundred kB: deflate compresses zeros that well.
    tifffile.imwrite(bomb, np.zeros((20000, 20000), np.uint8), compression="zlib", tile=(1024, 1024))
    assert bomb.stat().st_size < 2_000_000

    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", "check-data", str(data)])
    with pytest.raises(SystemExit):
        main()  # check-data lists the file as a problem instead of calling it readable
    assert "bomb.tif: too large to decode safely" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(monkeypatch, capsys, "train", "--data", str(data), "--epochs", "1", "--image-size", "32",
                        "--batch-size", "4", "--out", str(tmp_path / "run"))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "bomb.tif" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "too large" in warnings[0], err


def test_check_data_names_the_bomb(tmp_path, monkeypatch, capsys):
    from spheroid_hpo.data import UnreadableImage, inspect_image

    bomb = tmp_path / "bomb.tif"
    tifffile.imwrite(bomb, np.zeros((20000, 20000), np.uint8), compression="zlib", tile=(1024, 1024))
    with pytest.raises(UnreadableImage, match="too large to decode safely"):
        inspect_image(bomb)


def test_check_data_does_not_group_plain_background_patches(tmp_path, monkeypatch, capsys):
    # A lab's "background" class: plain field under vignetting at random centres, camera noise,
    # a few specks; PNG, JPEG q85 and 16-bit TIFF, 150-330 px. Alike in illumination only, so
    # grouping them (58 of 160 once) makes a stratified split impossible.
    from image_sets import write_background_set

    paths = write_background_set(tmp_path / "data", count=90, seed=0)
    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", "check-data", str(tmp_path / "data"), "--json"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == len(paths) == 90
    grouped = {path for group in report["near_duplicates"] for path in group}
    assert len(grouped) <= 0.01 * len(paths), report["near_duplicates"]


# --- 6. a password in a study file's storage URL ---------------------------------------------------------


def test_worker_command_line_carries_no_password(tmp_path):
    from spheroid_hpo.tuning.launch import worker_command
    from spheroid_hpo.tuning.study_file import load_study_config

    path = tmp_path / "pw.toml"
    path.write_text(BOTH.format(name="pw", epochs=1, lr=1e-3))
    config = load_study_config(path)
    url = "postgresql+psycopg://spheroid:s3cret-Pw9@db.example:5432/hpo"
    command, env = worker_command(0, config=config, storage_url=url, artifact_dir=tmp_path, runs_dir=tmp_path,
                                  device="cpu", threads=1, heartbeat_interval=None)
    assert not any("s3cret" in part for part in command)
    assert "postgresql+psycopg://spheroid@db.example:5432/hpo" in command
    assert env["PGPASSWORD"] == "s3cret-Pw9"


@pytest.mark.postgres
def test_the_stored_study_file_holds_no_password(tmp_path):
    """Through ``create`` on the real PostgreSQL server (it trusts local connections, so any password works)."""
    import psycopg
    import sqlalchemy
    from conftest import POSTGRES_URL
    from psycopg import sql

    server = sqlalchemy.engine.make_url(POSTGRES_URL)
    name = f"spheroid_pw_{os.getpid()}"
    admin_uri = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin_uri, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = server._replace(password="s3cret-Pw9", database=name).render_as_string(hide_password=False)
        path = tmp_path / "pw.toml"
        path.write_text(BOTH.format(name="pw", epochs=1, lr=1e-3).replace(
            "n_trials = 1", f'n_trials = 1\nstorage = "{url}"'))
        assert "s3cret" not in create_in_a_child(path, tmp_path / "runs")
        study = optuna.load_study(study_name="pw.squeezenet1_1", storage=url)
        stored = study.user_attrs["study_file"]
        assert "s3cret" not in stored and server.host in stored
        with psycopg.connect(server.set(drivername="postgresql", database=name)
                             .render_as_string(hide_password=False)) as connection:
            dump = connection.execute("SELECT string_agg(value_json, ' ') FROM study_user_attributes").fetchone()[0]
        assert "s3cret" not in dump
    finally:
        with psycopg.connect(admin_uri, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- 7. storage faults ----------------------------------------------------------------------------------


def test_a_locked_sqlite_storage_is_one_line(tmp_path, monkeypatch, capsys):
    database = tmp_path / "study.db"
    # Opened once as every command opens it (WAL), so the lock is met in a query, not at opening.
    optuna.create_study(storage=storage_module.open_storage(f"sqlite:///{database}"), study_name="x")
    monkeypatch.setattr(storage_module, "SQLITE_BUSY_TIMEOUT_S", 1)
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a paused worker holding the write lock
    try:
        code, err = run_cli(monkeypatch, capsys, "report", "--storage", f"sqlite:///{database}", "--study", "x")
    finally:
        holder.rollback()
        holder.close()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "stayed locked for 1 s" in lines[0], err


OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from spheroid_hpo.tuning.storage import open_storage
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
open_storage("sqlite:///" + sys.argv[1], heartbeat_interval=None)
"""


@pytest.mark.slow
def test_processes_creating_one_new_sqlite_file_at_once_all_open_it(tmp_path):
    """Two launches on one new file raced to create its tables ("table studies already exists")."""
    for attempt in range(4):
        database, go = tmp_path / f"{attempt}" / "study.db", tmp_path / f"go-{attempt}"
        processes = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, str(database), str(go)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for _ in range(3)]
        time.sleep(2.0)  # let every process import and wait at the line
        go.touch()
        outputs = [process.communicate(timeout=300)[0] for process in processes]
        assert [process.returncode for process in processes] == [0, 0, 0], outputs


def test_a_worker_for_a_missing_study_creates_no_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(monkeypatch, capsys, "worker", "--study", "typo", "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "does not exist" in err, err
    assert not (tmp_path / "runs" / "typo").exists()


def test_class_folder_names_keep_their_spaces(tmp_path, demo_dir, monkeypatch, capsys):
    data = tmp_path / "data"
    for folder in demo_dir.iterdir():
        if folder.is_dir():
            target = data / (f" {folder.name} " if folder.name.startswith("0") else folder.name)
            target.mkdir(parents=True)
            for image in sorted(folder.iterdir())[:4]:
                (target / image.name).write_bytes(image.read_bytes())
    monkeypatch.chdir(tmp_path)
    for run in range(2):  # the second run reads the manifest the first one wrote
        code, err = run_cli(monkeypatch, capsys, "train", "--data", str(data), "--epochs", "1", "--image-size",
                            "32", "--batch-size", "4", "--out", str(tmp_path / f"run{run}"))
        assert code == 0, err


# --- small ones ----------------------------------------------------------------------------------------


def test_requires_python_allows_only_versions_with_tomllib():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"].replace(" ", "").startswith(">=3.11")


def test_report_cleans_up_on_sigterm(tmp_path):
    """SIGTERM while ``report`` runs leaves no staging folder behind."""
    script = (
        "import os, signal, sys, threading, time\n"
        "import spheroid_hpo.results.report._build as build\n"
        "def slow(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n"
        "build._build = slow\n"
        "from spheroid_hpo.tuning.workspace import Workspace\n"
        "build.open_family = lambda **kw: type('F', (), {'name': 'x', 'workspace': lambda self, **k: "
        "Workspace.of('x', **k)})()\n"
        "build.require_best_trials = lambda family: {}\n"
        "sys.argv = ['spheroid-hpo', 'report', '--study', 'x', '--out', sys.argv[1], '--artifacts', sys.argv[2]]\n"
        "from spheroid_hpo.cli import main\n"
        "main()\n"
    )
    (tmp_path / "artifacts").mkdir()
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out" / "report"),
                             str(tmp_path / "artifacts")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 128 + signal.SIGTERM, result.stdout + result.stderr
    assert list((tmp_path / "out").iterdir()) == []


# --- issue 26: study files that reach the data --------------------------------------------------------


def test_more_folds_than_the_smallest_class_has_images_stop_create_in_one_line(tmp_path, monkeypatch, capsys):
    """Once accepted by create; then every worker exited with a 10 kB message naming each of 1000 folds."""
    monkeypatch.chdir(tmp_path)
    path = study_file(tmp_path, n_trials=1)
    path.write_text(path.read_text().replace("[data]\n", "[data]\ncv_folds = 1000\n"))
    code, err = run_cli(monkeypatch, capsys, "create", "--study", str(path), "--runs-dir", str(tmp_path / "runs"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: cv_folds = 1000 is more than the ") and "at most" in lines[0], err
    assert len(lines[0]) < 300


def test_a_study_file_with_a_byte_order_mark_is_read(tmp_path, monkeypatch, capsys):
    """Windows Notepad saves one; it gave "Invalid statement (at line 1, column 1)". Workers read the stored text."""
    from spheroid_hpo.tuning.studies import find_study_family

    monkeypatch.chdir(tmp_path)
    path = study_file(tmp_path, n_trials=1)
    path.write_bytes("\ufeff".encode() + path.read_bytes())
    code, err = run_cli(monkeypatch, capsys, "create", "--study", str(path), "--runs-dir", str(tmp_path / "runs"))
    assert code == 0, err
    storage = storage_module.open_storage(f"sqlite:///{tmp_path / 'runs' / 'bad' / 'study.db'}",
                                          heartbeat_interval=None)
    config, _ = find_study_family(storage, "bad")
    assert config.architectures == ("squeezenet1_1",)


def test_storage_urls_that_name_no_study_write_no_file(tmp_path, monkeypatch, capsys):
    """Issue 26, L7 and L16: ``sqlite://runs/x.db`` (two slashes) left a 4 kB x.db in the working folder,
    and `report` on a 0-byte study.db wrote Optuna's tables (114 kB) into it."""
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(monkeypatch, capsys, "report", "--storage", "sqlite://runs/x.db", "--study", "x")
    assert code == 2 and "SQLite URLs take three slashes" in err and "sqlite:///runs/x.db" in err, err
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "study.db"
    empty.touch()
    for command in ("report", "worker"):
        code, err = run_cli(monkeypatch, capsys, command, "--storage", f"sqlite:///{empty}", "--study", "x")
        assert code == 2 and "is empty" in err, err
    assert empty.stat().st_size == 0
