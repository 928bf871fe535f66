"""The files a report folder holds besides its figures: each one's name, what it is, and its writer.

A new output (a JSON summary, say) is one entry in ``REPORT_OUTPUTS`` and a writer taking the
``RenderedReport``; ``write_report`` writes every entry into its staging folder and ``spheroid-hpo
report`` lists them from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.results.report._checklist import CHECKLIST_FILE, ChecklistItem, checklist_json
from spheroid_hpo.results.report._content import ReportContent
from spheroid_hpo.results.report._document import Block
from spheroid_hpo.results.report._render import render_html, render_markdown
from spheroid_hpo.results.report._table import write_table3_csv, write_table3_tex

__all__ = ["REPORT_OUTPUTS", "RenderedReport", "ReportOutput", "report_output_names"]


@dataclass(frozen=True)
class RenderedReport:
    """What every output is written from: the content, its document blocks and the checklist."""

    content: ReportContent
    title: str
    blocks: Sequence[Block]
    checklist: Sequence[ChecklistItem]
    folder: Path  # the report folder being written (figures already in it)

    @property
    def caption(self) -> str:
        """Table III's caption."""
        return (f"Test F1 per class and mean (macro-F1) of each architecture's best trial, "
                f"study {self.content.family.name}")


@dataclass(frozen=True)
class ReportOutput:
    """One file of the report folder, written by ``write(report, path)``."""

    file_name: str
    description: str
    write: Callable[[RenderedReport, Path], object]


def _text(render: Callable[[RenderedReport], str]) -> Callable[[RenderedReport, Path], object]:
    return lambda report, path: path.write_text(render(report))


REPORT_OUTPUTS: tuple[ReportOutput, ...] = (
    ReportOutput("report.md", "the report as Markdown, figures as files beside it",
                 _text(lambda r: render_markdown(r.title, r.blocks))),
    ReportOutput("report.html", "the report as one HTML page, figures inline",
                 _text(lambda r: render_html(r.title, r.blocks, folder=r.folder))),
    ReportOutput(CHECKLIST_FILE, "the reporting checklist by section",
                 _text(lambda r: checklist_json(r.checklist, study=r.content.family.name))),
    ReportOutput("table3.csv", "Table III at full precision",
                 lambda r, path: write_table3_csv(r.content.tuned, r.content.class_names, path)),
    ReportOutput("table3.tex", "Table III as a LaTeX booktabs table",
                 lambda r, path: write_table3_tex(r.content.tuned, r.content.class_names, path, caption=r.caption)),
)


def report_output_names() -> tuple[str, ...]:
    """The file names of the report's outputs, in the order they are written."""
    return tuple(output.file_name for output in REPORT_OUTPUTS)
