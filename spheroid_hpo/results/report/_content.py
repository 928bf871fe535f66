"""What the report says, in order: the comparison first, then how far to trust it, then the study."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from optuna.trial import FrozenTrial

from spheroid_hpo.results.family import StudyFamily
from spheroid_hpo.results.report._document import Block, Bullets, Figures, Heading, Paragraph, Table
from spheroid_hpo.results.report._paired import PairedComparison
from spheroid_hpo.results.report._repeats import RepeatedRuns
from spheroid_hpo.results.report._summary import StudySummary
from spheroid_hpo.results.report._table import (
    PUBLISHED_CLASS_NAMES,
    PUBLISHED_ROWS,
    Table3Row,
    format_count,
    format_score,
    format_seconds,
    param_columns,
)
from spheroid_hpo.training.hyperparams import format_param, param_label
from spheroid_hpo.tuning.records import RunRecord
from spheroid_hpo.tuning.storage import masked_url


@dataclass(frozen=True)
class ReportContent:
    family: StudyFamily
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]
    data_folder: Path
    tuned: tuple[Table3Row, ...]
    original: tuple[Table3Row, ...]
    best: dict[str, FrozenTrial]
    summaries: tuple[StudySummary, ...]
    repeats: dict[str, RepeatedRuns]
    comparisons: tuple[PairedComparison, ...]
    figures: dict[str, dict[str, Path]]  # architecture -> figure name -> path in the report folder
    notes: tuple[str, ...]
    evaluations: dict = field(default_factory=dict)  # architecture -> TestEvaluation of its best trial


def report_blocks(content: ReportContent) -> tuple[str, list[Block]]:
    """The report's title and blocks."""
    family = content.family
    title = f"Study {family.name}: {' vs '.join(family.config.architectures)}"
    blocks: list[Block] = [*_introduction(content)]
    blocks += _table3(content)
    blocks += _calibration(content)
    blocks += _cross_validation(content)
    blocks += _original(content)
    blocks += _published()
    blocks += _repeats(content)
    blocks += _figures(content)
    blocks += _study_summary(content)
    if content.notes:
        blocks += [Heading("Notes"), Bullets(content.notes)]
    return title, blocks


def _introduction(content: ReportContent) -> list[Block]:
    family, sizes = content.family, content.split_sizes
    demo = family.data.demo
    if family.data.path is None and demo:
        data = (f"the generated demo data set (per_class={demo['per_class']}, size={demo['size']} px, "
                f"seed={demo['seed']}), which stands in for the paper's images")
    else:
        data = f"the images in {family.data.path or content.data_folder}"
    training = family.config.training
    relaxed = family.data.split_relaxed
    split_rule = f" Split relaxed: {relaxed}." if relaxed else ""
    if family.config.data.split.near_duplicates == "apart":
        split_rule = " Near-duplicate images were allowed in different splits (near_duplicates = \"apart\")."
    return [Paragraph(
        f"Each architecture's best trial by validation macro-F1 (the tuning objective) was evaluated once on the "
        f"test split, which no trial saw. Data: {data}, at {family.data.image_size} px; "
        f"{sizes.get('train', 0)} training, {sizes.get('val', 0)} validation and {sizes.get('test', 0)} test "
        f"images in the classes {', '.join(content.class_names)}.{split_rule} Training: Adam, cross-entropy, seed "
        f"{training.seed}, precision {training.precision}, weights {training.weights}. Storage: "
        f"{masked_url(family.storage_url)}."
    )]


def _score_table(rows: Sequence[Table3Row], class_names: Sequence[str], *, caption: str,
                 extra: tuple[str, ...] = (), extra_cells: Sequence[tuple[str, ...]] = ()) -> Table:
    params = param_columns(rows)
    columns = ("architecture", "trial", *class_names, "mean", *(param_label(p, 'title') for p in params),
               "val macro-F1", "time (s)", "parameters", *extra)
    body = []
    for index, row in enumerate(rows):
        scores = row.class_f1 if row.class_f1 is not None else (None,) * len(class_names)
        cells = (row.architecture, "–" if row.trial_number is None else f"#{row.trial_number}",
                 *(format_score(s) for s in scores), format_score(row.mean_f1),
                 *(format_param(p, row.params.get(p)) for p in params), format_score(row.val_macro_f1, digits=3),
                 format_seconds(row.seconds), format_count(row.parameter_count))
        body.append(cells + (extra_cells[index] if extra_cells else ()))
    return Table(columns=columns, rows=tuple(body), caption=caption)


def _table3(content: ReportContent) -> list[Block]:
    return [
        Heading("Table III: test F1 per class of each architecture's best configuration"),
        _score_table(content.tuned, content.class_names,
                     caption="Test F1 per class and mean (macro-F1); best hyperparameters (Table II's columns)"),
        Paragraph("Also written as table3.csv (full precision) and table3.tex; splits.csv is the split every "
                  "trial and this report used. Time is the trial's wall-clock training time; validation macro-F1 "
                  "is the score the search maximised."),
    ]


def _calibration(content: ReportContent) -> list[Block]:
    """Temperature, ECE before/after on validation and test, and test macro-F1 with and without TTA."""
    rows, images = [], []
    for architecture, trial in content.best.items():
        evaluation = content.evaluations.get(architecture)
        if evaluation is None or evaluation.calibration is None:
            continue
        val = (RunRecord.of(trial).calibration or {}).get("val")
        test = evaluation.calibration.scores["test"]
        rows.append((
            architecture, f"#{trial.number}", f"{evaluation.calibration.temperature:.2f}",
            f"{val['ece_before']:.3f} → {val['ece_after']:.3f}" if val else "–",
            f"{test['ece_before']:.3f} → {test['ece_after']:.3f}",
            f"{test['nll_before']:.3f} → {test['nll_after']:.3f}",
            format_score(evaluation.metrics.macro_f1),
            format_score(evaluation.tta_metrics.macro_f1) if evaluation.tta_metrics else "–",
        ))
        if "reliability" in content.figures.get(architecture, {}):
            images.append((content.figures[architecture]["reliability"],
                           f"{architecture}: test reliability diagram, softmax and calibrated"))
    if not rows:
        return []
    blocks: list[Block] = [
        Heading("Calibrated probabilities and test-time augmentation"),
        Table(
            columns=("architecture", "trial", "temperature", "validation ECE", "test ECE", "test NLL",
                     "test macro-F1", "test macro-F1 with TTA"),
            rows=tuple(rows),
            caption="Each best trial's temperature, fitted on validation by minimising NLL; expected calibration "
                    "error (15 bins) and NLL before → after; TTA averages the calibrated probabilities over the "
                    "8 rotations and flips",
        ),
    ]
    if images:
        blocks.append(Figures(tuple(images)))
    return blocks


def _cross_validation(content: ReportContent) -> list[Block]:
    """Mean ± sd of the fold scores of each architecture's best trial, when trials were cross-validated."""
    folds = content.family.config.data.cv_folds
    if folds is None:
        return []
    rows = []
    for architecture, trial in content.best.items():
        scores = list(RunRecord.of(trial).cv_scores)
        spread = f"{statistics.fmean(scores):.3f} ± {statistics.stdev(scores):.3f}" if len(scores) > 1 else "–"
        rows.append((architecture, f"#{trial.number}", spread, ", ".join(f"{s:.3f}" for s in scores) or "–"))
    return [
        Heading(f"Cross-validation: validation macro-F1 over {folds} folds"),
        Table(columns=("architecture", "trial", "mean ± sd", "per fold"), rows=tuple(rows),
              caption="Each best trial trained once per fold of train+val; its value is the mean"),
        Paragraph("The test scores above come from the model of the last fold, which saw the other folds' "
                  "images; the test split stayed out of every fold."),
    ]


def _original(content: ReportContent) -> list[Block]:
    tuned = {row.architecture: row for row in content.tuned}
    gains = []
    for row in content.original:
        best = tuned[row.architecture]
        if row.mean_f1 is None or best.mean_f1 is None:
            gains.append(("–",))
        else:
            gains.append((f"{best.mean_f1 - row.mean_f1:+.2f}",))
    blocks: list[Block] = [
        Heading("The paper's original configuration (baseline trial)"),
        _score_table(content.original, content.class_names, extra=("tuned − original (mean)",), extra_cells=gains,
                     caption="Test F1 of the enqueued first trial, the paper's original hyperparameters"),
    ]
    notes = [f"{row.architecture}: {row.note}" for row in content.original if row.note]
    if notes:
        blocks.append(Bullets(tuple(notes)))
    return blocks


def _published() -> list[Block]:
    rows = tuple(
        (row.architecture, *(format_score(s) for s in row.class_f1), format_score(row.mean_f1),
         *(format_param(p, row.params[p]) for p in ("epochs", "lr", "rotation", "batch_size")),
         f"{row.seconds / 60:.2f}")
        for row in PUBLISHED_ROWS
    )
    return [
        Heading("For reference: the paper's published Table III"),
        Paragraph("Published figures, measured on the paper's NIH-3T3 spheroid images, not on this study's data "
                  "and not by this code. Compare the pattern, not the numbers.", kind="note"),
        Table(
            columns=("architecture (paper)", *PUBLISHED_CLASS_NAMES, "mean", "epochs", "learning rate",
                     "rotation (°)", "batch size", "train + test time (min)"),
            rows=rows, caption="Published F1 per class on the test images (paper, Table III and Figs. 1-2)",
        ),
    ]


def _repeats(content: ReportContent) -> list[Block]:
    blocks: list[Block] = [Heading("How much of the difference is luck?")]
    if not content.repeats:
        blocks.append(Paragraph(
            "Each score above is one training run: one draw of initialisation, shuffling and rotations. A single "
            "run cannot carry a conclusion about which architecture is better; rerun the report with --repeats 5 "
            "(or more) to retrain each best configuration with several seeds and compare them paired by seed.",
            kind="note",
        ))
        return blocks
    any_runs = next(iter(content.repeats.values()))
    k = len(any_runs.seeds)
    rows = []
    for runs in content.repeats.values():
        spread = "–" if runs.std is None else f"{runs.std:.3f}"
        rows.append((runs.architecture, f"#{runs.trial_number}", str(k), f"{runs.mean:.3f} ± {spread}",
                     f"{min(runs.test_macro_f1):.3f}", f"{max(runs.test_macro_f1):.3f}",
                     f"{sum(runs.val_macro_f1) / k:.3f}"))
    blocks += [
        Paragraph(f"Each architecture's best configuration retrained with seeds "
                  f"{', '.join(map(str, any_runs.seeds))} on the study's split; test macro-F1 as mean ± sample "
                  f"standard deviation."),
        Table(columns=("architecture", "configuration of", "runs", "test macro-F1", "min", "max",
                       "val macro-F1 (mean)"), rows=tuple(rows), caption="Test macro-F1 over seeds"),
    ]
    if k < 2:
        blocks.append(Paragraph("With one run per architecture there is no spread and no test; use --repeats 5 "
                                "or more.", kind="note"))
        return blocks
    comparison_rows = []
    for c in content.comparisons:
        comparison_rows.append((
            f"{c.first} − {c.second}", str(c.n), f"{c.mean_difference:+.3f}",
            "–" if c.sd_difference is None else f"{c.sd_difference:.3f}",
            "–" if c.t_test_p_value is None else f"{c.t_test_p_value:.3g}",
            f"{c.permutation_p_value:.3g}",
        ))
    blocks += [
        Table(columns=("difference (paired by seed)", "pairs", "mean", "sd", "paired t-test p",
                       "sign-flip permutation p"), rows=tuple(comparison_rows),
              caption="Paired comparison of test macro-F1"),
        Paragraph(f"Two-sided tests of a zero mean difference. The permutation test assumes nothing about the "
                  f"distribution; with {k} pairs its smallest possible p-value is {2 / 2 ** k:.3g}. A t-test p of "
                  f"'–' means the differences have no spread (or scipy is missing)."),
    ]
    return blocks


def _figures(content: ReportContent) -> list[Block]:
    blocks: list[Block] = [Heading("Training curves and test confusion matrices (the paper's Figs. 1 and 2)")]
    for architecture, files in content.figures.items():
        trial = content.best[architecture]
        blocks.append(Heading(f"{architecture}, trial #{trial.number}", level=3))
        images = []
        if "curves" in files:
            images.append((files["curves"], f"{architecture}: (a) loss and (b) accuracy per epoch, train and "
                                            f"validation"))
        images.append((files["confusion"], f"{architecture}: (c) test confusion matrix (rows true, columns "
                                           f"predicted)"))
        blocks.append(Figures(tuple(images)))
    blocks.append(Heading("Optimisation history and hyperparameter importances"))
    for architecture, files in content.figures.items():
        images = []
        if "history" in files:
            images.append((files["history"], f"{architecture}: validation macro-F1 per trial and best so far"))
        if "importances" in files:
            images.append((files["importances"], f"{architecture}: hyperparameter importances (Optuna)"))
        if images:
            blocks.append(Figures(tuple(images)))
    return blocks


def _study_summary(content: ReportContent) -> list[Block]:
    rows = []
    for s in content.summaries:
        rows.append((
            s.architecture, str(s.complete), str(s.pruned), str(s.failed), _duration(s.compute_seconds),
            str(s.epochs_trained), f"{s.epochs_saved} ({s.epochs_saved_fraction:.0%})",
            f"{_duration(s.seconds_saved)} ({s.saved_fraction:.0%})",
            "–" if s.images_per_second is None else f"{s.images_per_second:.1f}",
        ))
    total_compute = sum(s.compute_seconds for s in content.summaries)
    total_saved = sum(s.seconds_saved for s in content.summaries)
    return [
        Heading("Study summary"),
        Table(
            columns=("architecture", "complete", "pruned", "failed", "compute time", "epochs trained",
                     "epochs saved by pruning", "time saved by pruning (est.)", "train images/s per trial"),
            rows=tuple(rows), caption="Trials, compute, what the pruner saved, and training throughput",
        ),
        Paragraph(
            f"Total compute {_duration(total_compute)}; pruning saved an estimated {_duration(total_saved)} "
            f"({total_saved / (total_compute + total_saved) if total_compute + total_saved else 0:.0%} of what the "
            f"study would have used without it). Saved epochs are those a pruned trial was suggested but never "
            f"trained; time saved prices them at that trial's own seconds per epoch. Throughput is the mean over "
            f"trials of each trial's training images per second on its device."
        ),
    ]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
