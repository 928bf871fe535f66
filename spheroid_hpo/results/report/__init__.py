"""The study report: the paper's comparison from each architecture's best trial, on the test split.

``write_report`` is what ``spheroid-hpo report`` calls. The pieces it is built from
(scoring a trial's model on the test split, the paired comparison, Table III) are public
too, for ``reproduce`` and for notebooks; a study family is ``spheroid_hpo.results.family``'s.
"""

from spheroid_hpo.results.report._build import ReportResult, write_report
from spheroid_hpo.results.report._checklist import CHECKLIST_FILE, SECTIONS, ChecklistItem, build_checklist
from spheroid_hpo.results.report._evaluate import TestEvaluation, evaluate_on_test
from spheroid_hpo.results.report._outputs import REPORT_OUTPUTS, RenderedReport, ReportOutput, report_output_names
from spheroid_hpo.results.report._paired import PairedComparison, paired_comparison, sign_flip_p_value
from spheroid_hpo.results.report._summary import StudySummary, summarize_study
from spheroid_hpo.results.report._table import PUBLISHED_ROWS, Table3Row, table3_columns

__all__ = [
    "CHECKLIST_FILE",
    "SECTIONS",
    "ChecklistItem",
    "PUBLISHED_ROWS",
    "REPORT_OUTPUTS",
    "PairedComparison",
    "RenderedReport",
    "ReportOutput",
    "ReportResult",
    "StudySummary",
    "Table3Row",
    "TestEvaluation",
    "build_checklist",
    "evaluate_on_test",
    "paired_comparison",
    "report_output_names",
    "sign_flip_p_value",
    "summarize_study",
    "table3_columns",
    "write_report",
]
