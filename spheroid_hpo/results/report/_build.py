"""``write_report``: from a finished study to a report folder, written whole or not at all.

Flow: load the study family -> pick each architecture's best trial (validation
macro-F1) and its baseline -> score their saved models once on the test split ->
optionally retrain the best configurations with K seeds -> tables, figures,
summary -> Markdown, HTML, CSV and LaTeX in a hidden staging folder that is
renamed into place only when everything is written.
"""

from __future__ import annotations

import contextlib
import csv
import io
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from spheroid_hpo.atomic_write import replacing_folder
from spheroid_hpo.data import DEFAULT_MANIFEST_NAME
from spheroid_hpo.defaults import RUNS_DIR
from spheroid_hpo.errors import InputError
from spheroid_hpo.results.artifacts import download_history, download_model
from spheroid_hpo.results.family import StudyFamily, open_family, require_best_trials
from spheroid_hpo.results.report._checklist import build_checklist, checklist_blocks
from spheroid_hpo.results.report._content import ReportContent, report_blocks
from spheroid_hpo.results.report._evaluate import TestEvaluation, evaluate_on_test
from spheroid_hpo.results.report._figures import (
    curves_figure,
    importances_figure,
    optimization_history_figure,
    test_confusion_figure,
)
from spheroid_hpo.results.report._outputs import REPORT_OUTPUTS, RenderedReport
from spheroid_hpo.results.report._paired import PairedComparison
from spheroid_hpo.results.report._repeats import RepeatedRuns, compare_architectures, repeat_best
from spheroid_hpo.results.report._summary import StudySummary, summarize_study
from spheroid_hpo.results.report._table import Table3Row
from spheroid_hpo.training.calibration import plot_reliability
from spheroid_hpo.training.device import resolve_device
from spheroid_hpo.tuning.records import RunRecord, baseline_trial
from spheroid_hpo.tuning.storage import open_artifact_store

_MARKER = ".spheroid-hpo-report"  # marks a folder this command may replace


@dataclass(frozen=True)
class ReportResult:
    """What the report shows, for callers and tests; the files are in ``out_dir``."""

    out_dir: Path
    class_names: tuple[str, ...]
    tuned: tuple[Table3Row, ...]  # Table III, one row per architecture
    original: tuple[Table3Row, ...]  # the paper's original configuration, per architecture
    evaluations: dict[str, TestEvaluation]  # the best trial's test predictions, per architecture
    summaries: tuple[StudySummary, ...]
    repeats: dict[str, RepeatedRuns]
    comparisons: tuple[PairedComparison, ...]
    notes: tuple[str, ...]
    seconds: float


def write_report(
    *,
    study: str | None,
    storage_url: str | None = None,
    out_dir: Path | None = None,
    artifact_dir: Path | None = None,
    runs_dir: Path = RUNS_DIR,
    data_dir: Path | None = None,
    repeats: int = 0,
    device: str = "auto",
    progress: bool = False,
) -> ReportResult:
    """Write ``report.md``, ``report.html``, ``table3.csv`` and ``table3.tex`` for study ``study``.

    ``repeats`` > 0 retrains each architecture's best configuration with that many
    seeds and compares the architectures paired by seed. Nothing is written unless
    the whole report is; an existing report in ``out_dir`` is replaced.
    """
    started = time.perf_counter()
    if repeats < 0:
        raise InputError(f"--repeats must be 0 (no retraining) or more, but got {repeats}")
    runs_dir = Path(runs_dir)
    family = open_family(storage_url=storage_url, study=study, runs_dir=runs_dir)
    best = require_best_trials(family)
    workspace = family.workspace(runs_dir=runs_dir, artifact_dir=artifact_dir)
    out_dir = Path(out_dir) if out_dir is not None else workspace.report
    _check_out_dir(out_dir)
    artifact_dir = workspace.existing_artifacts()
    torch_device = resolve_device(device)
    say = _printer(progress)

    with contextlib.ExitStack() as stack:
        try:
            staging = stack.enter_context(replacing_folder(out_dir, replace=True))
        except OSError as error:
            raise InputError(f"cannot write the report next to {out_dir}: {error.strerror}; pass --out DIR") from None
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="spheroid-hpo-report-"))
        result = _build(
            family, best, staging=staging, scratch=Path(scratch), artifact_dir=artifact_dir,
            runs_dir=runs_dir, data_dir=data_dir, repeats=repeats, device=torch_device, say=say,
        )
        (staging / _MARKER).write_text("spheroid-hpo report folder; `spheroid-hpo report` replaces it\n")
    return ReportResult(out_dir=out_dir, seconds=time.perf_counter() - started, **result)


def _build(family: StudyFamily, best: dict[str, FrozenTrial], *, staging: Path, scratch: Path, artifact_dir: Path,
           runs_dir: Path, data_dir: Path | None, repeats: int, device, say) -> dict:
    store = open_artifact_store(artifact_dir)
    folder = family.data_folder(data_dir=data_dir, runs_dir=runs_dir)
    manifest = staging / DEFAULT_MANIFEST_NAME
    say(f"loading the test split of {folder}")
    dataset = family.load_data(folder, manifest_path=manifest)
    tester = _Tester(family, store=store, artifact_dir=artifact_dir, test=dataset.test,
                     class_names=dataset.class_names, device=device, scratch=scratch, say=say)

    tuned, original = [], []
    for architecture, trial in best.items():
        tuned.append(_row(family, architecture, trial, tester.evaluate(architecture, trial)))
        original.append(_baseline_row(family, architecture, tester))

    repeated, comparisons = {}, []
    if repeats:
        repeated = repeat_best(
            family, best, data_dir=folder, manifest_path=manifest, repeats=repeats, device=str(device),
            on_run=lambda architecture, seed: say(f"retraining {architecture} with seed {seed}"),
        )
        comparisons = compare_architectures(repeated)

    say("drawing figures")
    evaluations = {architecture: tester.evaluate(architecture, trial) for architecture, trial in best.items()}
    figure_files, notes = _draw_figures(family, best, evaluations, repeated, store=store, staging=staging,
                                        scratch=scratch, class_names=dataset.class_names)

    summaries = tuple(summarize_study(a, family.trials(a), params=lambda t, a=a: family.params(t, a))
                      for a in family.config.architectures)
    content = ReportContent(
        family=family, class_names=dataset.class_names, split_sizes=_split_sizes(family.manifest_csv),
        data_folder=folder, tuned=tuple(tuned), original=tuple(original), best=best, summaries=summaries,
        repeats=repeated, comparisons=tuple(comparisons), figures=figure_files, notes=tuple(notes),
        evaluations=evaluations,
    )
    title, blocks = report_blocks(content)
    checklist = build_checklist(content, duplicates=dataset.duplicates, straddling=dataset.straddling,
                                runs_dir=runs_dir)
    blocks += checklist_blocks(checklist)
    rendered = RenderedReport(content=content, title=title, blocks=blocks, checklist=checklist, folder=staging)
    for output in REPORT_OUTPUTS:
        output.write(rendered, staging / output.file_name)
    return {
        "class_names": dataset.class_names, "tuned": tuple(tuned), "original": tuple(original),
        "evaluations": evaluations, "summaries": summaries, "repeats": repeated,
        "comparisons": tuple(comparisons), "notes": tuple(notes),
    }


class _Tester:
    """Scores trials' saved models on the test split, each trial once (a baseline may also be the best)."""

    def __init__(self, family: StudyFamily, *, store, artifact_dir: Path, test, class_names, device, scratch, say):
        self.family, self.store, self.artifact_dir, self.test = family, store, artifact_dir, test
        self.class_names, self.device, self.scratch, self.say = class_names, device, scratch, say
        self._done: dict[tuple[str, int], TestEvaluation] = {}

    def evaluate(self, architecture: str, trial: FrozenTrial) -> TestEvaluation:
        key = (architecture, trial.number)
        if key not in self._done:
            self.say(f"testing {architecture} trial {trial.number}")
            model = download_model(trial, artifact_store=self.store, artifact_dir=self.artifact_dir,
                                   study_name=self.family.config.study_name(architecture), folder=self.scratch)
            self._done[key] = evaluate_on_test(
                model, architecture=architecture, trial_number=trial.number, test=self.test,
                class_names=self.class_names, precision=self.family.config.training.precision, device=self.device,
            )
        return self._done[key]


def _baseline_row(family: StudyFamily, architecture: str, tester: _Tester) -> Table3Row:
    baseline = baseline_trial(family.trials(architecture))
    if baseline is None:
        return Table3Row(architecture=architecture, class_f1=None, mean_f1=None,
                         note="no baseline trial (the study file has no [baseline])")
    if baseline.state != TrialState.COMPLETE:
        return _row(family, architecture, baseline, None,
                    note=f"trial {baseline.number} {baseline.state.name.lower()}: no model to test")
    return _row(family, architecture, baseline, tester.evaluate(architecture, baseline))


def _draw_figures(family: StudyFamily, best, evaluations, repeated, *, store, staging: Path, scratch: Path,
                  class_names) -> tuple[dict[str, dict[str, Path]], list[str]]:
    """Per architecture: curves, test confusion, optimisation history, importances; notes for what is missing."""
    folder = staging / "figures"
    folder.mkdir()
    notes, figure_files = [], {}
    for architecture, trial in best.items():
        history = download_history(trial, storage=family.storage, artifact_store=store, folder=scratch,
                                   study_name=family.config.study_name(architecture))
        source = f"best trial {trial.number}, loss and accuracy per epoch"
        if history is None and architecture in repeated:
            history, source = repeated[architecture].histories[0], "retrained best configuration, first seed"
        files = {}
        if history:
            files["curves"] = curves_figure(history, folder / f"{architecture}-curves.png",
                                            architecture=architecture, source=source)
        else:
            notes.append(f"{architecture}: trial {trial.number} stored no training history, so no curves.")
        files["confusion"] = test_confusion_figure(
            evaluations[architecture].metrics.confusion, class_names, folder / f"{architecture}-confusion.png",
            architecture=architecture, trial_number=trial.number,
        )
        calibration = evaluations[architecture].calibration
        if calibration is not None:
            files["reliability"] = plot_reliability(
                calibration, folder / f"{architecture}-reliability.png",
                title=f"{architecture} trial {trial.number}: test reliability, T = {calibration.temperature:.2f}",
            )
        study = family.studies[architecture]
        for name, plot in (("history", optimization_history_figure), ("importances", importances_figure)):
            drawn = plot(study, folder / f"{architecture}-{name}.png", architecture=architecture)
            if drawn.path is not None:
                files[name] = drawn.path
            else:
                notes.append(drawn.note)
        figure_files[architecture] = {key: path.relative_to(staging) for key, path in files.items()}
    return figure_files, notes


def _row(family: StudyFamily, architecture: str, trial: FrozenTrial, evaluation: TestEvaluation | None, *,
         note: str = "") -> Table3Row:
    record = RunRecord.of(trial)
    return Table3Row(
        architecture=architecture,
        class_f1=evaluation.metrics.f1 if evaluation else None,
        mean_f1=evaluation.metrics.macro_f1 if evaluation else None,
        params=family.params(trial, architecture),
        val_macro_f1=trial.value if trial.state == TrialState.COMPLETE else None,
        seconds=record.wall_time_seconds,
        parameter_count=record.parameter_count,
        trial_number=trial.number,
        note=note,
    )


def _split_sizes(manifest_csv: str) -> dict[str, int]:
    sizes = {"train": 0, "val": 0, "test": 0}
    for row in csv.DictReader(io.StringIO(manifest_csv)):
        sizes[row["split"]] = sizes.get(row["split"], 0) + 1
    return sizes


def _check_out_dir(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file; pass a folder for the report")
    if any(out_dir.iterdir()) and not (out_dir / _MARKER).is_file():
        raise InputError(
            f"--out folder {out_dir} holds other files and is not a report folder; pass a new or empty folder "
            f"(a previous report there is replaced)"
        )


def _printer(enabled: bool):
    def say(message: str) -> None:
        if enabled:
            print(message, file=sys.stderr, flush=True)
    return say
