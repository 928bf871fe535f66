"""``audit_labels``: from a study's winner or a run folder to suspects.csv, audit.html and audit.json."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.atomic_write import write_text_atomically
from spheroid_hpo.data import DEFAULT_MANIFEST_NAME
from spheroid_hpo.defaults import AUDIT_FOLDS, AUDIT_PAGE_SUSPECTS, RUNS_DIR
from spheroid_hpo.errors import InputError
from spheroid_hpo.results.audit._page import audit_page
from spheroid_hpo.results.audit._probabilities import HeldOut, Log, held_out_probabilities
from spheroid_hpo.results.audit._source import AuditPlan, plan_from_run, plan_from_study
from spheroid_hpo.results.audit._suspects import FILTER_BY, RANK_BY, Suspect, find_suspects, suspects_csv
from spheroid_hpo.training.device import resolve_device

SUSPECTS_FILE = "suspects.csv"
PAGE_FILE = "audit.html"
SUMMARY_FILE = "audit.json"  # what the report's checklist reads


@dataclass(frozen=True)
class AuditRequest:
    """What to audit (a run folder, or a study's winner) and how; checked when made."""

    run_dir: Path | None = None
    study: str | None = None
    storage_url: str | None = None
    runs_dir: Path = RUNS_DIR
    data_dir: Path | None = None
    out: Path | None = None  # default: runs/<study>/audit, or the run folder's audit/
    folds: int | None = None  # None: the study's own cv_folds, else AUDIT_FOLDS
    top: int = AUDIT_PAGE_SUSPECTS
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.run_dir is not None and (self.study is not None or self.storage_url is not None):
            raise InputError(f"pass a run folder ({self.run_dir}) or --study/--storage, not both")
        if self.run_dir is None and self.study is None and self.storage_url is None:
            raise InputError("pass a run folder made by `spheroid-hpo train`, or --study NAME for a study's winner")
        if self.folds is not None and (isinstance(self.folds, bool) or not isinstance(self.folds, int)
                                       or self.folds < 2):
            raise InputError(f"--folds must be an integer of at least 2 (each image is held out once), "
                             f"but got {self.folds!r}; pass e.g. 5")
        if self.top < 1:
            raise InputError(f"--top must be at least 1, but got {self.top}")


@dataclass(frozen=True)
class AuditResult:
    """The suspects, the probabilities they came from, and where the files are."""

    out_dir: Path
    plan: AuditPlan
    held_out: HeldOut
    suspects: tuple[Suspect, ...]
    summary: dict  # audit.json
    seconds: float


def audit_labels(request: AuditRequest, *, log: Log | None = None) -> AuditResult:
    """Rank the train and validation images whose given label is probably wrong; write the three files."""
    started = time.perf_counter()
    log = log or _stderr
    if request.run_dir is not None:
        plan = plan_from_run(Path(request.run_dir), data_dir=request.data_dir)
    else:
        plan = plan_from_study(study=request.study, storage_url=request.storage_url,
                               runs_dir=Path(request.runs_dir), data_dir=request.data_dir)
    folds, fold_rule = _folds(plan, request.folds)
    return audit_plan(plan, folds=folds, fold_rule=fold_rule, out_dir=request.out, top=request.top,
                      device=request.device, log=log, started=started)


def audit_plan(plan: AuditPlan, *, folds: int, fold_rule: str = "--folds", out_dir: Path | None = None,
               top: int = AUDIT_PAGE_SUSPECTS, device: str = "auto", log: Log | None = None,
               started: float | None = None) -> AuditResult:
    """Audit a resolved ``plan`` with ``folds`` folds; write the three files into ``out_dir`` (default the plan's)."""
    started = time.perf_counter() if started is None else started
    log = log or _stderr
    out_dir = Path(out_dir) if out_dir is not None else plan.out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file; pass a folder for the audit")
    torch_device = resolve_device(device)
    log(f"auditing the labels of {plan.description}: {folds} folds ({fold_rule})")
    with tempfile.TemporaryDirectory(prefix="spheroid-hpo-audit-") as scratch:
        held_out = held_out_probabilities(plan, folds=folds, manifest_path=Path(scratch) / DEFAULT_MANIFEST_NAME,
                                          device=torch_device, log=log)
    log("ranking suspects with cleanlab")
    suspects = find_suspects(held_out)
    summary = _summary(plan, held_out, suspects, fold_rule=fold_rule, seconds=time.perf_counter() - started)
    text = (f"{len(suspects)} of {len(held_out.paths)} train and validation images flagged "
            f"({summary['suspect_fraction']:.1%}); out-of-sample probabilities from {folds} folds ({fold_rule}) "
            f"of {plan.architecture} retrained with the audited configuration (TTA over 8 views, each fold's "
            f"temperature); flagged and ranked by cleanlab {summary['cleanlab']} ({FILTER_BY}, ranked by "
            f"{RANK_BY}). The test split was not read.")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out_dir / SUSPECTS_FILE, suspects_csv(suspects))
    write_text_atomically(out_dir / PAGE_FILE, audit_page(held_out, suspects, description=plan.description,
                                                          summary=text, top=top))
    write_text_atomically(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
    log(text)
    return AuditResult(out_dir=out_dir, plan=plan, held_out=held_out, suspects=suspects, summary=summary,
                       seconds=time.perf_counter() - started)


def _folds(plan: AuditPlan, asked: int | None) -> tuple[int, str]:
    if plan.cv_folds is not None:
        if asked is not None and asked != plan.cv_folds:
            raise InputError(f"--folds {asked} differs from the cv_folds = {plan.cv_folds} the winner was "
                             f"cross-validated with; leave --folds out to audit on the winner's own folds")
        return plan.cv_folds, "the winner's own cross-validation folds"
    if asked is None:
        return AUDIT_FOLDS, "the default"
    return asked, "--folds"


def _summary(plan: AuditPlan, held_out: HeldOut, suspects: tuple[Suspect, ...], *, fold_rule: str,
             seconds: float) -> dict:
    given = Counter(held_out.class_names[int(label)] for label in held_out.labels)
    flagged = Counter(s.given_label for s in suspects)
    return {
        "audited": plan.description, "architecture": plan.architecture, "params": plan.hyperparams.as_dict(),
        "folds": held_out.folds, "fold_rule": fold_rule, "images": len(held_out.paths),
        "suspects": len(suspects), "suspect_fraction": len(suspects) / max(1, len(held_out.paths)),
        "suspects_per_given_class": {name: flagged.get(name, 0) for name in held_out.class_names},
        "images_per_class": {name: given.get(name, 0) for name in held_out.class_names},
        "filter_by": FILTER_BY, "rank_by": RANK_BY, "cleanlab": importlib.metadata.version("cleanlab"),
        "seconds": round(seconds, 1),
        "splits_read": ["train", "val"],
    }


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
