"""``report`` on a real finished study: Table III checked against scikit-learn, whole-or-nothing output."""

from __future__ import annotations

import csv
import io
import itertools
import re
import sys

import numpy as np
import pytest
import torch
from finished_trials import trial_model_and_split
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import TrialState
from scipy import stats
from sklearn.metrics import f1_score
from study_files import write_tiny_study

from spheroid_hpo.cli import main
from spheroid_hpo.data import DataSource, load_dataset
from spheroid_hpo.errors import InputError
from spheroid_hpo.results.family import open_family
from spheroid_hpo.results.report import (
    PUBLISHED_ROWS,
    paired_comparison,
    sign_flip_p_value,
    write_report,
)
from spheroid_hpo.results.report._repeats import RepeatedRuns, compare_architectures, repeat_best
from spheroid_hpo.training import inference
from spheroid_hpo.training.device import resolve_precision
from spheroid_hpo.training.saved_model import load_model
from spheroid_hpo.tuning.records import RunRecord, baseline_trial, best_trial
from spheroid_hpo.tuning.storage import open_storage
from spheroid_hpo.tuning.studies import create_studies
from spheroid_hpo.tuning.study_file import load_study_config


@pytest.fixture(scope="module")
def report(finished_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report"
    result = write_report(
        study=finished_study.name, storage_url=finished_study.storage_url, out_dir=out,
        artifact_dir=finished_study.artifact_dir, runs_dir=finished_study.runs_dir, device="cpu",
    )
    return result


@pytest.fixture(scope="module")
def family(finished_study):
    return open_family(storage_url=finished_study.storage_url, study=finished_study.name,
                       runs_dir=finished_study.runs_dir)


def _table3(report) -> list[dict[str, str]]:
    with open(report.out_dir / "table3.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_table3_has_the_papers_layout(report, family):
    rows = _table3(report)
    class_names = list(report.class_names)
    assert class_names == ["0_background", "1_dead_cells", "2_live_outside", "3_live_inside"]
    assert list(rows[0]) == ["architecture", *class_names, "mean", "epochs", "lr", "rotation", "batch_size",
                             "val_macro_f1", "time_s", "params"]
    # One row per architecture, in the study file's order.
    assert [row["architecture"] for row in rows] == list(family.config.architectures)
    tex = (report.out_dir / "table3.tex").read_text()
    assert r"\begin{tabular}" in tex and r"0\_background" in tex and "squeezenet1\\_1" in tex


def test_table3_scores_are_scikit_learns_on_the_best_trials_test_predictions(report, family):
    for row in _table3(report):
        architecture = row["architecture"]
        trials = family.trials(architecture)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = report.evaluations[architecture]
        # The best trial by validation macro-F1, the earliest on a tie.
        top = max(t.value for t in complete)
        assert best.trial_number == min(t.number for t in complete if t.value == top)

        labels = list(range(len(report.class_names)))
        per_class = f1_score(best.y_true, best.y_pred, labels=labels, average=None, zero_division=0)
        macro = f1_score(best.y_true, best.y_pred, labels=labels, average="macro", zero_division=0)
        assert [float(row[name]) for name in report.class_names] == pytest.approx(per_class, abs=1e-9)
        assert float(row["mean"]) == pytest.approx(macro, abs=1e-9)

        trial = next(t for t in trials if t.number == best.trial_number)
        assert int(row["epochs"]) == trial.params["epochs"] and int(row["batch_size"]) == trial.params["batch_size"]
        assert float(row["lr"]) == trial.params["lr"] and float(row["rotation"]) == trial.params["rotation"]
        assert float(row["val_macro_f1"]) == trial.value
        assert int(row["params"]) == trial.user_attrs["parameter_count"]
        assert float(row["time_s"]) == trial.user_attrs["wall_time_seconds"]


def test_the_predictions_are_the_saved_models_on_the_untouched_test_split(report, family, finished_study, tmp_path):
    """Recompute one architecture's predictions independently: model artifact + the study's test split."""
    architecture = family.config.architectures[0]
    evaluation = report.evaluations[architecture]
    trial = next(t for t in family.trials(architecture) if t.number == evaluation.trial_number)
    model_file = tmp_path / "model.pt"
    download_artifact(artifact_store=FileSystemArtifactStore(str(finished_study.artifact_dir)),
                      file_path=str(model_file), artifact_id=trial.user_attrs["model_artifact_id"])
    manifest = tmp_path / "splits.csv"
    manifest.write_text(family.manifest_csv)
    dataset = load_dataset(next(finished_study.runs_dir.glob("demo-data-*")), image_size=32,
                           manifest_path=manifest, splits=("test",))
    test_paths = [row["path"] for row in csv.DictReader(io.StringIO(family.manifest_csv)) if row["split"] == "test"]
    assert sorted(evaluation.paths) == sorted(test_paths) and dataset.test.paths == evaluation.paths
    model, info = load_model(model_file)
    logits = inference.predict_logits(model, dataset.test.images, mean=info.mean, std=info.std,
                                   autocast_dtype=resolve_precision("auto", torch.device("cpu"), model=model))
    np.testing.assert_array_equal(logits.argmax(1).numpy(), evaluation.y_pred)
    np.testing.assert_array_equal(dataset.test.labels.numpy(), evaluation.y_true)


def test_baseline_rows_and_published_rows_are_labelled(report, family):
    markdown = (report.out_dir / "report.md").read_text()
    for row in report.original:
        baseline = baseline_trial(family.trials(row.architecture))
        assert baseline.user_attrs["baseline"] is True and row.trial_number == baseline.number
        assert row.params == baseline.params
    # The paper's own figures, verbatim and labelled as published on its data.
    assert "| MobileNet V3 Large | 0.95 | 0.67 | 0.44 | 0.54 | 0.65 |" in markdown
    assert "| SqueezeNet | 0.98 | 0.50 | 0.50 | 0.93 | 0.73 |" in markdown
    assert "Published figures, measured on the paper's NIH-3T3" in markdown
    assert [r.mean_f1 for r in PUBLISHED_ROWS] == [0.65, 0.73]
    assert "The paper's original configuration (baseline trial)" in markdown


def test_study_summary_counts_compute_and_pruner_savings(report, family):
    for summary in report.summaries:
        trials = family.trials(summary.architecture)
        assert summary.complete == sum(t.state == TrialState.COMPLETE for t in trials)
        assert summary.pruned == sum(t.state == TrialState.PRUNED for t in trials)
        assert summary.failed == sum(t.state == TrialState.FAIL for t in trials)
        assert summary.compute_seconds == pytest.approx(sum(t.user_attrs["wall_time_seconds"] for t in trials))
        pruned = [t for t in trials if t.state == TrialState.PRUNED]
        assert summary.epochs_saved == sum(t.params["epochs"] - t.user_attrs["epochs_trained"] for t in pruned)
        speeds = [t.user_attrs["train_images_per_second"] for t in trials]
        assert summary.images_per_second == pytest.approx(sum(speeds) / len(speeds))
    markdown = (report.out_dir / "report.md").read_text()
    assert "epochs saved by pruning" in markdown and "train images/s per trial" in markdown


def test_markdown_links_figures_and_html_embeds_them(report):
    markdown = (report.out_dir / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", markdown)
    for architecture in report.evaluations:
        assert f"figures/{architecture}-curves.png" in linked
        assert f"figures/{architecture}-confusion.png" in linked
        assert f"figures/{architecture}-history.png" in linked
    assert all((report.out_dir / path).is_file() for path in linked)

    page = (report.out_dir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(linked)
    assert 'src="figures/' not in page and "<style>" in page
    # Importances need two completed trials with different scores; otherwise a note says why.
    for architecture in report.evaluations:
        if f"figures/{architecture}-importances.png" not in linked:
            assert any(note.startswith(f"{architecture}:") for note in report.notes)
            assert f"{architecture}: " in markdown.split("## Notes")[1]


def test_a_study_without_a_finished_trial_is_an_input_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """Studies created but never run: the CLI says so on one line and exits 2; no report folder appears."""
    study_file = write_tiny_study(tmp_path, name="unrun")
    config = load_study_config(study_file)
    url = f"sqlite:///{tmp_path / 'unrun.db'}"
    data = DataSource(path=None, demo={"per_class": 12, "size": 32, "seed": 0}, image_size=32,
                      fingerprint="0" * 64)
    create_studies(config, open_storage(url, heartbeat_interval=None), study_file_text=study_file.read_text(),
                   data=data, manifest_csv="path,class,split\n")
    out = tmp_path / "out" / "report"
    with pytest.raises(InputError, match="no completed trial"):
        write_report(study="unrun", storage_url=url, out_dir=out, runs_dir=tmp_path)

    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", "report", "--study", "unrun", "--storage", url,
                                      "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "no completed trial" in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_model_artifact_is_an_input_error_and_leaves_no_partial_report(finished_study, tmp_path):
    out = tmp_path / "report"
    empty_store = tmp_path / "elsewhere"
    empty_store.mkdir()
    with pytest.raises(InputError, match="--artifacts"):
        write_report(study=finished_study.name, storage_url=finished_study.storage_url, out_dir=out,
                     artifact_dir=empty_store, runs_dir=finished_study.runs_dir, device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]  # no report, no staging folder


def test_a_folder_that_is_not_a_report_is_never_replaced(finished_study, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not a report folder"):
        write_report(study=finished_study.name, storage_url=finished_study.storage_url, out_dir=out,
                     artifact_dir=finished_study.artifact_dir, runs_dir=finished_study.runs_dir)
    assert (out / "thesis.tex").read_text() == "precious"
    with pytest.raises(InputError, match="no study storage"):
        write_report(study="nothing", storage_url=f"sqlite:///{tmp_path / 'none.db'}", out_dir=tmp_path / "r")
    assert not (tmp_path / "none.db").exists()


def test_a_repeat_with_the_studys_seed_retrains_the_trial_exactly(family, finished_study):
    """Seed 0 of --repeats is the trial again: same split, seed and (the worker's) thread count."""
    architecture = "squeezenet1_1"
    trial = best_trial(family.trials(architecture))
    data_dir = next(finished_study.runs_dir.glob("demo-data-*"))
    manifest = finished_study.runs_dir / "repeat-splits.csv"
    manifest.write_text(family.manifest_csv)
    previous = torch.get_num_threads()
    torch.set_num_threads(RunRecord.of(trial).torch_threads)  # what the trial's worker trained with
    try:
        runs = repeat_best(family, {architecture: trial}, data_dir=data_dir, manifest_path=manifest,
                           repeats=1, device="cpu")[architecture]
    finally:
        torch.set_num_threads(previous)
    assert runs.seeds == (family.config.training.seed,) and runs.trial_number == trial.number
    assert runs.val_macro_f1 == (trial.value,)
    assert len(runs.test_macro_f1) == 1 and runs.std is None
    assert len(runs.histories[0]) == trial.params["epochs"]


def test_architectures_are_compared_paired_by_seed():
    a = (0.70, 0.62, 0.81, 0.66, 0.75)
    b = tuple(x - 0.05 for x in a)  # worse by the same amount on every seed, with a large spread across seeds
    runs = {name: RepeatedRuns(architecture=name, trial_number=0, seeds=tuple(range(5)), test_macro_f1=scores,
                               val_macro_f1=scores, histories=()) for name, scores in (("a", a), ("b", b))}
    (comparison,) = compare_architectures(runs)
    assert (comparison.first, comparison.second, comparison.n) == ("a", "b", 5)
    assert comparison.mean_difference == pytest.approx(0.05)
    # Paired, every seed agrees: the smallest p a 5-pair sign-flip test can give. Unpaired it would be large.
    assert comparison.permutation_p_value == pytest.approx(2 / 2**5)
    assert comparison.t_test_p_value is None  # differences without spread: t is undefined
    assert runs["a"].std == pytest.approx(np.std(a, ddof=1))


def test_paired_tests_match_scipy_and_exact_enumeration():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.5, 0.9, 8), rng.uniform(0.5, 0.9, 8)
    comparison = paired_comparison("a", a, "b", b)
    assert comparison.t_test_p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    d = a - b
    flips = [abs(np.dot(signs, d)) / d.size for signs in itertools.product((1, -1), repeat=d.size)]
    assert comparison.permutation_p_value == pytest.approx(np.mean(np.array(flips) >= abs(d.mean()) - 1e-12))
    assert sign_flip_p_value(np.zeros(3)) == 1.0
    # Beyond exact enumeration, the Monte Carlo estimate agrees with the exact answer of a clear case.
    assert sign_flip_p_value(np.full(30, 0.01)) < 1e-4


def _manifest_count(manifest_csv: str, split: str) -> int:
    return sum(row["split"] == split for row in csv.DictReader(io.StringIO(manifest_csv)))


def test_every_test_confusion_matrix_sums_to_the_manifests_test_split(report, family):
    test_size = _manifest_count(family.manifest_csv, "test")
    assert test_size != _manifest_count(family.manifest_csv, "train")
    for architecture, evaluation in report.evaluations.items():
        assert np.asarray(evaluation.metrics.confusion).sum() == test_size == len(evaluation.y_true), architecture


def test_a_launched_trials_validation_f1_is_its_model_on_the_manifests_validation_split(family, finished_study,
                                                                                        tmp_path):
    """Recomputed from the trial's model.pt, as a worker process stored it, on the study's validation split."""
    architecture = family.config.architectures[0]
    trial = best_trial(family.trials(architecture))
    model, info, val = trial_model_and_split(finished_study, family, trial, "val", tmp_path)
    assert len(val.labels) == _manifest_count(family.manifest_csv, "val")
    autocast = resolve_precision(family.config.training.precision, torch.device("cpu"), model=model)
    predicted = inference.predict_logits(model, val.images, mean=info.mean, std=info.std,
                                      autocast_dtype=autocast).argmax(1).numpy()
    labels = list(range(len(info.class_names)))
    expected = f1_score(val.labels.numpy(), predicted, labels=labels, average=None, zero_division=0)
    np.testing.assert_allclose(trial.user_attrs["val_f1_per_class"], expected, atol=1e-6)
    assert trial.value == pytest.approx(float(np.mean(expected)), abs=1e-6)
