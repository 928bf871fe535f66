"""The study report: the paper's comparison from each architecture's best trial, on the test split.

``write_report`` is what ``spheroid-hpo report`` calls. The pieces it is built from
(loading a study family, scoring a trial's model on the test split) are public too,
for ``export-best`` and for notebooks.
"""

from spheroid_hpo.results.artifacts import download_history, download_model
from spheroid_hpo.results.family import (
    StudyFamily,
    baseline_trial,
    best_trial,
    open_family,
    require_best_trials,
)
from spheroid_hpo.results.report._build import ReportResult, write_report
from spheroid_hpo.results.report._evaluate import TestEvaluation, evaluate_on_test
from spheroid_hpo.results.report._paired import PairedComparison, paired_comparison, sign_flip_p_value
from spheroid_hpo.results.report._summary import StudySummary, summarize_study
from spheroid_hpo.results.report._table import PUBLISHED_ROWS, Table3Row, table3_columns

__all__ = [
    "PUBLISHED_ROWS",
    "PairedComparison",
    "ReportResult",
    "StudyFamily",
    "StudySummary",
    "Table3Row",
    "TestEvaluation",
    "baseline_trial",
    "best_trial",
    "download_history",
    "download_model",
    "evaluate_on_test",
    "open_family",
    "paired_comparison",
    "require_best_trials",
    "sign_flip_p_value",
    "summarize_study",
    "table3_columns",
    "write_report",
]
