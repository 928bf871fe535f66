"""``spheroid-hpo audit-labels``: which train and validation images are probably mislabelled.

Out-of-sample class probabilities come from K-fold retraining of the audited configuration
on train+val (groups and duplicates kept in one fold; the study's own folds when it was
cross-validated); ``cleanlab.filter.find_label_issues`` flags and ranks the suspects. The
test split is never read. ``plant_flips`` moves a known share of files to another class
folder, to measure what the audit finds on your own data.
"""

from spheroid_hpo.results.audit._flips import plant_flips
from spheroid_hpo.results.audit._page import LIMITS
from spheroid_hpo.results.audit._probabilities import HeldOut
from spheroid_hpo.results.audit._request import (
    PAGE_FILE,
    SUMMARY_FILE,
    SUSPECTS_FILE,
    AuditRequest,
    AuditResult,
    audit_labels,
    audit_plan,
)
from spheroid_hpo.results.audit._source import AUDIT_DIR, AuditPlan, plan_for_folder
from spheroid_hpo.results.audit._suspects import CSV_COLUMNS, Suspect, find_suspects

__all__ = [
    "AUDIT_DIR",
    "CSV_COLUMNS",
    "LIMITS",
    "PAGE_FILE",
    "SUMMARY_FILE",
    "SUSPECTS_FILE",
    "AuditPlan",
    "AuditRequest",
    "AuditResult",
    "HeldOut",
    "Suspect",
    "audit_labels",
    "audit_plan",
    "find_suspects",
    "plan_for_folder",
    "plant_flips",
]
