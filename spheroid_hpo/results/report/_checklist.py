"""The report's reporting checklist, after the DOME recommendations: data, optimisation, model, evaluation.

Each item says where its value comes from: what the study recorded (its study file, storage
and split), what this report measured (test scores, the data folder scanned now), what was not
run yet (with the command that runs it), or what only the authors can supply (who labelled
the images, how they were acquired). The same items go to report.md, report.html and
``checklist.json``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import platform
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from scipy import stats

from spheroid_hpo.data import IMBALANCE_WARNING_RATIO, Duplicates
from spheroid_hpo.results.audit import AUDIT_DIR, SUMMARY_FILE
from spheroid_hpo.results.best_file import RULE_TEXT
from spheroid_hpo.results.export import export_format, format_names
from spheroid_hpo.results.report._content import ReportContent
from spheroid_hpo.results.report._document import Block, Bullets, Heading, Paragraph
from spheroid_hpo.training.hyperparams import format_params
from spheroid_hpo.tuning import records

CHECKLIST_FILE = "checklist.json"
SECTIONS = ("data", "optimisation", "model", "evaluation")
RECORDED = "recorded by the study"
MEASURED = "measured by this report"
NOT_RUN = "not run"
AUTHORS = "to be supplied by the authors"
SOURCES = {
    RECORDED: "read from the study's storage, study file and split manifest",
    MEASURED: "computed when this report was written (test split, data folder, this machine)",
    NOT_RUN: "the service can fill it in: the value names the command",
    AUTHORS: "the study cannot know it",
}
REFERENCE = "DOME recommendations, Walsh et al., Nature Methods 18, 1122-1127 (2021)"


@dataclass(frozen=True)
class ChecklistItem:
    """One line of the checklist."""

    section: str  # one of SECTIONS
    item: str
    value: str
    source: str  # one of SOURCES


def build_checklist(content: ReportContent, *, duplicates: Duplicates, straddling: Sequence[dict],
                    runs_dir: Path) -> tuple[ChecklistItem, ...]:
    """Every checklist item, filled from ``content`` (the report's), the data scan and the study's folder."""
    study_dir = content.family.workspace(runs_dir=runs_dir).folder
    return (*_data(content, duplicates, straddling, study_dir), *_optimisation(content), *_model(content, study_dir),
            *_evaluation(content))


def checklist_blocks(items: Sequence[ChecklistItem]) -> list[Block]:
    """The checklist section of report.md and report.html."""
    blocks: list[Block] = [
        Heading("Reporting checklist (DOME)"),
        Paragraph(f"Following the {REFERENCE}. Each item is marked [{RECORDED}], [{MEASURED}], [{NOT_RUN}] "
                  f"(with the command that fills it) or [{AUTHORS}]. Also written as {CHECKLIST_FILE}."),
    ]
    for section in SECTIONS:
        blocks += [Heading(section.capitalize(), level=3),
                   Bullets(tuple(f"{i.item}: {i.value} [{i.source}]" for i in items if i.section == section))]
    return blocks


def checklist_json(items: Sequence[ChecklistItem], *, study: str) -> str:
    """``checklist.json``: the items by section, with what each source means."""
    return json.dumps({
        "checklist": "DOME", "reference": REFERENCE, "study": study, "sources": SOURCES,
        "sections": {section: [{"item": i.item, "value": i.value, "source": i.source} for i in items
                               if i.section == section] for section in SECTIONS},
    }, indent=2, ensure_ascii=False) + "\n"


def _data(content: ReportContent, duplicates: Duplicates, straddling, study_dir: Path) -> list[ChecklistItem]:
    family, data = content.family, content.family.config.data
    demo = family.data.demo
    source = (f"generated demo data (per_class={demo['per_class']}, size={demo['size']} px, seed={demo['seed']})"
              if family.data.path is None and demo else f"folder {family.data.path}")
    rows = list(csv.DictReader(io.StringIO(family.manifest_csv)))
    counts = Counter((row["class"], row["split"]) for row in rows)
    per_class = Counter(row["class"] for row in rows)
    classes = "; ".join(f"{name}: train {counts[name, 'train']}, val {counts[name, 'val']}, "
                        f"test {counts[name, 'test']}" for name in content.class_names)
    unit = (f"groups from the file-name pattern {data.split.group_by!r}, each in one split" if data.split.group_by
            else "groups from the manifest, each in one split" if rows and rows[0].get("group")
            else "the single image")
    relaxed = (f"relaxed: {family.data.split_relaxed}" if family.data.split_relaxed
               else f"{len(straddling)} duplicate group(s) straddle splits" if straddling
               else "nothing relaxed: no duplicate group straddles splits")
    kept = ("exact duplicates kept in one split, near-duplicates allowed apart" if data.split.near_duplicates == "apart"
            else "exact and near-duplicate images kept in one split")
    folds = f"; trials cross-validated on {data.cv_folds} folds of train+val" if data.cv_folds else ""
    ratio = max(per_class.values()) / max(1, min(per_class.values())) if per_class else 0.0
    imbalance = (f"largest/smallest class {ratio:.1f}x ({max(per_class, key=per_class.get)} vs "
                 f"{min(per_class, key=per_class.get)}); "
                 + ("above" if ratio > IMBALANCE_WARNING_RATIO else "within")
                 + f" check-data's warning ratio {IMBALANCE_WARNING_RATIO:g}")
    items = [
        ChecklistItem("data", "source", f"{source}, at {family.data.image_size} px", RECORDED),
        ChecklistItem("data", "classes and images per split", classes, RECORDED),
        ChecklistItem("data", "split rule and unit",
                      f"stratified by class, fractions train/val/test "
                      f"{'/'.join(f'{f:g}' for f in data.split.fractions)}, split seed {data.split.seed}; "
                      f"unit: {unit}; {kept}; {relaxed}{folds}", RECORDED),
        ChecklistItem("data", "duplicates", f"{len(duplicates.exact)} exact and {len(duplicates.near)} "
                      f"near-duplicate group(s) in the folder", MEASURED),
        ChecklistItem("data", "class balance", imbalance, RECORDED),
        _audit_item(study_dir, family.name),
        ChecklistItem("data", "annotation (who labelled, protocol, agreement between annotators)", "–", AUTHORS),
        ChecklistItem("data", "acquisition (instrument, staining, magnification, sites, dates)", "–", AUTHORS),
        ChecklistItem("data", "availability (repository, accession, licence)", "–", AUTHORS),
    ]
    return items


def _audit_item(study_dir: Path, study: str) -> ChecklistItem:
    summary_file = study_dir / AUDIT_DIR / SUMMARY_FILE
    if not summary_file.is_file():
        return ChecklistItem("data", "label audit", f"not found in {summary_file.parent}; run `spheroid-hpo "
                             f"audit-labels --study {study}`", NOT_RUN)
    audit = json.loads(summary_file.read_text())
    return ChecklistItem(
        "data", "label audit",
        f"{audit['suspects']} of {audit['images']} train and validation images flagged as possibly mislabelled "
        f"({audit['suspect_fraction']:.1%}) by cleanlab {audit['cleanlab']} "
        # audit.json files written before filter_by was recorded used cleanlab's default filter
        f"({audit.get('filter_by', 'prune_by_noise_rate')}) on out-of-sample probabilities of "
        f"{audit['audited']} ({audit['folds']} folds); a person decides: see {AUDIT_DIR}/", RECORDED)


def _space(spec) -> str:
    if spec.kind == "fixed":
        return f"{spec.name} = {spec.value}"
    if spec.kind == "categorical":
        return f"{spec.name} in {list(spec.choices)}"
    return f"{spec.name} {spec.low:g}–{spec.high:g}" + (" (log)" if spec.log else "")


def _optimisation(content: ReportContent) -> list[ChecklistItem]:
    config = content.family.config
    trials = {a: content.family.trials(a) for a in config.architectures}
    counts = "; ".join(
        f"{s.architecture}: {s.complete} complete, {s.pruned} pruned, {s.failed} failed, "
        f"{len(trials[s.architecture]) - records.budget_used(trials[s.architecture])} run again"
        for s in content.summaries)
    machines = sorted({f"{device or '?'} on {host or '?'} ({threads or '?'} CPU threads)"
                       for ts in trials.values() for device, host, threads in map(records.machine_of, ts)})
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("torch", "torchvision", "optuna",
                                                                         "scikit-learn"))
    pruner = config.pruner
    baseline = format_params(config.baseline) if config.baseline else "none"
    return [
        ChecklistItem("optimisation", "search space", "; ".join(_space(s) for s in config.search_space), RECORDED),
        ChecklistItem("optimisation", "sampler", f"{config.sampler.name} (seed {config.sampler.seed}, "
                      f"{config.sampler.n_startup_trials} start-up trials)", RECORDED),
        ChecklistItem("optimisation", "pruner", f"{pruner.name} (n_startup_trials {pruner.n_startup_trials}, "
                      f"n_warmup_steps {pruner.n_warmup_steps}, min_resource {pruner.min_resource}, "
                      f"reduction_factor {pruner.reduction_factor})", RECORDED),
        ChecklistItem("optimisation", "budget", f"{config.n_trials} trials per architecture "
                      f"({', '.join(config.architectures)})"
                      + (f", timeout {config.timeout:g} s" if config.timeout else "") + f"; baseline: {baseline}",
                      RECORDED),
        ChecklistItem("optimisation", "trials", counts, RECORDED),
        ChecklistItem("optimisation", "compute time", f"{sum(s.compute_seconds for s in content.summaries):.0f} s "
                      f"of training over all trials", RECORDED),
        ChecklistItem("optimisation", "hardware", "; ".join(machines) or "not recorded", RECORDED),
        ChecklistItem("optimisation", "library versions", f"{versions}, Python {platform.python_version()} "
                      f"(the environment that wrote this report; trials do not record theirs)", MEASURED),
        ChecklistItem("optimisation", "selection rule", f"per architecture the completed trial with the highest "
                      f"{config.metric} (validation split only; the earliest on a tie); the winner is the best of "
                      f"these; the test split is scored only afterwards", RECORDED),
    ]


def _model(content: ReportContent, study_dir: Path) -> list[ChecklistItem]:
    family, config = content.family, content.family.config
    best = "; ".join(f"{a}: trial #{t.number}, {format_params(family.params(t, a))}" for a, t in content.best.items())
    counts = "; ".join(f"{row.architecture}: {row.parameter_count:,}" if row.parameter_count else
                       f"{row.architecture}: not recorded" for row in content.tuned)
    exported = [(path, hashlib.sha256(path.read_bytes()).hexdigest()) for name in format_names()
                if (path := study_dir / export_format(name).file_name).is_file()]
    exports = (ChecklistItem("model", "exported files (SHA-256)", "; ".join(f"{p.name} {h}" for p, h in exported),
                             MEASURED) if exported else
               ChecklistItem("model", "exported files (SHA-256)", f"none in {study_dir}; run `spheroid-hpo export "
                             f"--study {family.name} --format FORMAT` ({', '.join(format_names())})", NOT_RUN))
    return [
        ChecklistItem("model", "architectures and best configurations", best, RECORDED),
        ChecklistItem("model", "initial weights", config.training.weights, RECORDED),
        ChecklistItem("model", "parameters", counts, RECORDED),
        ChecklistItem("model", "input", f"{family.data.image_size} px square, 3 channels, ImageNet mean/std "
                      f"normalisation", RECORDED),
        ChecklistItem("model", "precision", config.training.precision, RECORDED),
        ChecklistItem("model", "output", "class probabilities (softmax), temperature-scaled on the validation "
                      "split", RECORDED),
        exports,
        ChecklistItem("model", "availability (where the weights are published, licence)", "–", AUTHORS),
    ]


def _evaluation(content: ReportContent) -> list[ChecklistItem]:
    items = [
        ChecklistItem("evaluation", "metric", "macro-F1 (mean of per-class F1): validation for tuning, test for "
                      "this report; per-class F1 in Table III", RECORDED),
        ChecklistItem("evaluation", "test split", f"{content.split_sizes.get('test', 0)} images, seen by no trial",
                      RECORDED),
        ChecklistItem("evaluation", "test macro-F1 of each best trial", "; ".join(
            f"{row.architecture}: {row.mean_f1:.3f}" for row in content.tuned if row.mean_f1 is not None), MEASURED),
    ]
    if content.repeats:
        items.append(ChecklistItem("evaluation", "repeats (test macro-F1 over seeds)", "; ".join(
            _spread(runs.architecture, runs.test_macro_f1) for runs in content.repeats.values()), MEASURED))
    else:
        items.append(ChecklistItem("evaluation", "repeats (test macro-F1 over seeds)", "one run per architecture; "
                                   f"run `spheroid-hpo report --study {content.family.name} --repeats 5`", NOT_RUN))
    if content.comparisons:
        items.append(ChecklistItem("evaluation", "paired comparison", "; ".join(
            f"{c.first} − {c.second}: {c.mean_difference:+.3f} over {c.n} seeds, sign-flip p "
            f"{c.permutation_p_value:.3g}" for c in content.comparisons), MEASURED))
    else:
        items.append(ChecklistItem("evaluation", "paired comparison", "needs --repeats 2 or more and two "
                                   "architectures", NOT_RUN))
    calibrated = {a: e for a, e in content.evaluations.items() if e.calibration is not None}
    items.append(ChecklistItem("evaluation", "calibration (test ECE before → after temperature scaling)", "; ".join(
        f"{a}: T {e.calibration.temperature:.2f}, {e.calibration.scores['test']['ece_before']:.3f} → "
        f"{e.calibration.scores['test']['ece_after']:.3f}" for a, e in calibrated.items()) or "not recorded",
        MEASURED))
    items.append(ChecklistItem("evaluation", "test-time augmentation (test macro-F1 without → with)", "; ".join(
        f"{a}: {e.metrics.macro_f1:.3f} → {e.tta_metrics.macro_f1:.3f}" for a, e in content.evaluations.items()
        if e.tta_metrics is not None) or "not measured", MEASURED))
    if content.family.config.data.cv_folds:
        items.append(ChecklistItem("evaluation", "cross-validation (validation macro-F1 over folds)", "; ".join(
            _spread(a, records.RunRecord.of(t).cv_scores) for a, t in content.best.items()), RECORDED))
    items += [
        ChecklistItem("evaluation", "reproduction rule (best.toml)", RULE_TEXT, RECORDED),
        ChecklistItem("evaluation", "independent validation (other lab, instrument or time)", "–", AUTHORS),
    ]
    return items


def _spread(name: str, values: Sequence[float]) -> str:
    """Mean, sample sd and the t-based 95% confidence interval of the mean."""
    values = list(values)
    if len(values) < 2:
        return f"{name}: {values[0]:.3f} (one run, no interval)" if values else f"{name}: none"
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = stats.t.ppf(0.975, len(values) - 1) * sd / len(values) ** 0.5
    return f"{name}: mean {mean:.3f}, sd {sd:.3f}, 95% CI [{mean - half:.3f}, {mean + half:.3f}] (n={len(values)})"
