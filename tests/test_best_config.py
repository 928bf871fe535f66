"""``export-best`` and ``reproduce``: the committed studies/best.toml retrains to its numbers in CI."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from sklearn.metrics import f1_score

from spheroid_hpo import engine
from spheroid_hpo.best_config import ReproduceResult, export_best, read_best_config, reproduce
from spheroid_hpo.cli import main
from spheroid_hpo.config import load_study_config
from spheroid_hpo.data import load_dataset
from spheroid_hpo.errors import InputError
from spheroid_hpo.report import open_family
from spheroid_hpo.saved_model import load_model
from spheroid_hpo.storage import open_storage
from spheroid_hpo.studies import DataRecord, create_studies
from study_files import write_tiny_study

COMMITTED = Path(__file__).resolve().parents[1] / "studies" / "best.toml"


def _run_cli(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code or 0


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """One folder for the regenerated demo data, shared by the reproductions."""
    return tmp_path_factory.mktemp("runs")


def test_the_committed_best_toml_reproduces(runs_dir, monkeypatch, capsys):
    assert _run_cli(monkeypatch, "reproduce", str(COMMITTED), "--runs-dir", str(runs_dir), "--device", "cpu") == 0
    out = capsys.readouterr().out
    config = read_best_config(COMMITTED)
    assert "reproduced: tolerance" in out and "NOT" not in out
    # Expected and obtained side by side, both scores within the file's tolerance.
    for name, expected in (("val macro-F1", config.val_macro_f1), ("test macro-F1", config.test_macro_f1)):
        line = next(line for line in out.splitlines() if line.startswith(name))
        shown_expected, obtained, difference = map(float, line.split()[-3:])
        assert shown_expected == pytest.approx(expected, abs=5e-5)
        assert abs(obtained - expected) <= config.tolerance + 5e-5


def test_a_tampered_expectation_fails_with_exit_code_1(runs_dir, tmp_path, monkeypatch, capsys):
    config = read_best_config(COMMITTED)
    shifted = config.val_macro_f1 + (0.1 if config.val_macro_f1 < 0.9 else -0.1)
    tampered = tmp_path / "best.toml"
    tampered.write_text(re.sub(r"(?m)^val_macro_f1 = .*$", f"val_macro_f1 = {shifted!r}", COMMITTED.read_text()))
    assert read_best_config(tampered).val_macro_f1 == shifted
    assert _run_cli(monkeypatch, "reproduce", str(tampered), "--runs-dir", str(runs_dir), "--device", "cpu") == 1
    assert "NOT reproduced" in capsys.readouterr().out


def test_export_best_writes_the_overall_best_trial_and_reads_back(finished_study, tmp_path, monkeypatch, capsys):
    assert _run_cli(monkeypatch, "export-best", "--study", finished_study.name, "--storage",
                    finished_study.storage_url, "--artifacts", str(finished_study.artifact_dir), "--runs-dir",
                    str(finished_study.runs_dir), "--threads", "3", "--device", "cpu") == 0
    path = tmp_path / "best.toml"
    path.write_text(capsys.readouterr().out)
    best = read_best_config(path)

    family = open_family(storage_url=finished_study.storage_url, study=finished_study.name,
                         runs_dir=finished_study.runs_dir)
    candidates = [(t.value, -family.config.architectures.index(a), -t.number, a, t)
                  for a in family.config.architectures for t in family.trials(a) if t.state.name == "COMPLETE"]
    *_, architecture, trial = max(candidates, key=lambda c: c[:3])
    assert (best.architecture, best.trial) == (architecture, trial.number)
    assert best.params == trial.params and best.val_macro_f1 == trial.value
    assert (best.image_size, best.seed, best.split_seed, best.fractions) == (32, 0, 0, (0.7, 0.15, 0.15))
    assert best.demo == {"per_class": 12, "size": 32, "seed": 0} and best.data_path is None
    # The thread count the trial recorded wins over --threads, which only fills in for trials without one.
    assert best.threads == trial.user_attrs["torch_threads"] != 3
    assert best.fingerprint == family.data["fingerprint"]

    # The expected test score is scikit-learn's macro-F1 of the trial's own model on the test split.
    model_file = tmp_path / "model.pt"
    download_artifact(artifact_store=FileSystemArtifactStore(str(finished_study.artifact_dir)),
                      file_path=str(model_file), artifact_id=trial.user_attrs["model_artifact_id"])
    manifest = tmp_path / "splits.csv"
    manifest.write_text(family.manifest_csv)
    test = load_dataset(next(finished_study.runs_dir.glob("demo-data-*")), image_size=32, manifest_path=manifest,
                        splits=("test",)).test
    model, info = load_model(model_file)
    predicted = engine.predict_logits(model, test.images, mean=info.mean, std=info.std,
                                      autocast_dtype=engine.resolve_precision("auto", engine.resolve_device("cpu"), model=model))
    expected = f1_score(test.labels.numpy(), predicted.argmax(1).numpy(), labels=range(4), average="macro",
                        zero_division=0)
    assert best.test_macro_f1 == pytest.approx(expected, abs=1e-12)

    # Written and read back, nothing is lost (the learning rate round-trips bit for bit).
    assert read_best_config(path) == best
    assert path.read_text() == best.to_toml()


def test_reproduce_refuses_data_that_differs_from_the_files(runs_dir, tmp_path):
    config = read_best_config(COMMITTED)
    other = tmp_path / "best.toml"
    other.write_text(COMMITTED.read_text().replace(config.fingerprint, "f" * 64))
    with pytest.raises(InputError, match="differs from the data"):
        reproduce(path=other, runs_dir=runs_dir, device="cpu")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace("[params]\n", "[params]\nmomentum = 0.1\n"), "params.momentum is not a known key"),
        (lambda text: text.replace("[expected]", "[expect]"), "expect is not a known key"),
        (lambda text: re.sub(r"(?m)^epochs = .*$", 'epochs = "six"', text), "params.epochs must be a int"),
        (lambda text: re.sub(r'(?m)^architecture = .*$', 'architecture = "lenet"', text), "unknown|use one of"),
        (lambda text: re.sub(r"(?m)^test_macro_f1 = .*$", "test_macro_f1 = 1.5", text), "between 0 and 1"),
        (lambda text: text.replace("[best]", "[best"), "not a readable TOML file"),
    ],
)
def test_bad_best_files_are_input_errors(tmp_path, edit, message):
    path = tmp_path / "best.toml"
    path.write_text(edit(COMMITTED.read_text()))
    with pytest.raises(InputError, match=message):
        read_best_config(path)


def test_cli_exit_code_2_for_a_missing_or_unknown_file(tmp_path, monkeypatch, capsys):
    assert _run_cli(monkeypatch, "reproduce", str(tmp_path / "absent.toml")) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text(COMMITTED.read_text() + "\n[extra]\nkey = 1\n")
    assert _run_cli(monkeypatch, "reproduce", str(bad)) == 2
    assert "extra is not a known key" in capsys.readouterr().err


def test_export_best_of_a_study_without_a_completed_trial_is_an_input_error(tmp_path):
    study_file = write_tiny_study(tmp_path, name="empty")
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    data = DataRecord(path=None, demo={"per_class": 12, "size": 32, "seed": 0}, image_size=32,
                      fingerprint="0" * 64, manifest_csv="path,class,split\n")
    create_studies(load_study_config(study_file), open_storage(url, heartbeat_interval=None),
                   study_file_text=study_file.read_text(), data=data)
    with pytest.raises(InputError, match="no completed trial"):
        export_best(study="empty", storage_url=url, runs_dir=tmp_path)


def test_tolerance_is_applied_to_both_scores():
    config = read_best_config(COMMITTED)
    exact = ReproduceResult(config=config, val_macro_f1=config.val_macro_f1, test_macro_f1=config.test_macro_f1,
                            device="cpu", threads=1, seconds=0.0, out_dir=None)
    assert exact.within_tolerance
    edge = dataclasses.replace(exact, test_macro_f1=config.test_macro_f1 - config.tolerance)
    assert edge.within_tolerance
    beyond = dataclasses.replace(exact, test_macro_f1=config.test_macro_f1 - config.tolerance - 0.001)
    assert not beyond.within_tolerance
