"""The paper's Table III (test F1 per class and mean) joined with Table II's hyperparameters.

Columns: architecture, one per class, mean, then the configuration that scored it
(epochs, learning rate, rotation, batch size, and any other searched parameter),
its validation macro-F1, training time and parameter count.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spheroid_hpo.training.hyperparams import format_param, param_label

# Table II's hyperparameters, in its column order; other searched parameters follow.
TABLE2_PARAMS = ("epochs", "lr", "rotation", "batch_size")


@dataclass(frozen=True)
class Table3Row:
    """One architecture's scores on the test split and the configuration behind them."""

    architecture: str
    class_f1: tuple[float, ...] | None  # None: the configuration has no model to test (e.g. it was pruned)
    mean_f1: float | None
    params: dict = field(default_factory=dict)
    val_macro_f1: float | None = None
    seconds: float | None = None
    parameter_count: int | None = None
    trial_number: int | None = None
    note: str = ""


# The paper's Table III on its own NIH-3T3 data, with the configurations its text reports for
# Figs. 1 and 2 (training and test time in minutes there). Published figures, not results of this code.
PUBLISHED_CLASS_NAMES = ("0 background", "1 dead cells", "2 live outside", "3 live inside")
PUBLISHED_ROWS = (
    Table3Row(
        architecture="MobileNet V3 Large", class_f1=(0.95, 0.67, 0.44, 0.54), mean_f1=0.65,
        params={"epochs": 70, "lr": 1e-4, "rotation": 20.0, "batch_size": 15}, seconds=4.74 * 60,
    ),
    Table3Row(
        architecture="SqueezeNet", class_f1=(0.98, 0.50, 0.50, 0.93), mean_f1=0.73,
        params={"epochs": 60, "lr": 1e-4, "rotation": 20.0, "batch_size": 15}, seconds=5.92 * 60,
    ),
)


def param_columns(rows: Sequence[Table3Row]) -> list[str]:
    """Table II's four columns, then any other parameter a row carries (e.g. bn_momentum)."""
    extra = sorted({name for row in rows for name in row.params} - set(TABLE2_PARAMS))
    return [*TABLE2_PARAMS, *extra]


def table3_columns(class_names: Sequence[str], params: Sequence[str] = TABLE2_PARAMS) -> list[str]:
    """The CSV header: architecture, each class, mean, the parameters, val macro-F1, time, params."""
    return ["architecture", *class_names, "mean", *params, "val_macro_f1", "time_s", "params"]


def table3_records(rows: Sequence[Table3Row], class_names: Sequence[str]) -> list[dict]:
    """One dict per row keyed by ``table3_columns``; missing values are None."""
    params = param_columns(rows)
    records = []
    for row in rows:
        scores = row.class_f1 if row.class_f1 is not None else (None,) * len(class_names)
        values = [row.architecture, *scores, row.mean_f1, *(row.params.get(p) for p in params),
                  row.val_macro_f1, row.seconds, row.parameter_count]
        records.append(dict(zip(table3_columns(class_names, params), values, strict=True)))
    return records


def write_table3_csv(rows: Sequence[Table3Row], class_names: Sequence[str], path: Path) -> Path:
    """Full-precision CSV of the table; empty cells where a value does not exist."""
    records = table3_records(rows, class_names)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=table3_columns(class_names, param_columns(rows)))
        writer.writeheader()
        for record in records:
            writer.writerow({key: _csv_value(value) for key, value in record.items()})
    return Path(path)


def write_table3_tex(rows: Sequence[Table3Row], class_names: Sequence[str], path: Path, *, caption: str) -> Path:
    """A LaTeX ``table`` (booktabs) with the paper's two-decimal F1 scores."""
    params = param_columns(rows)
    header = ["Architecture", *(_tex(name) for name in class_names), "Mean",
              *(_tex(param_label(p, 'latex')) for p in params), "Val. macro-F1", "Time (s)", "Parameters"]
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        rf"\caption{{{_tex(caption)}}}",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for row in rows:
        scores = row.class_f1 if row.class_f1 is not None else (None,) * len(class_names)
        cells = [_tex(row.architecture), *(format_score(s) for s in scores), format_score(row.mean_f1),
                 *(format_param(p, row.params.get(p)) for p in params), format_score(row.val_macro_f1, digits=3),
                 format_seconds(row.seconds), format_count(row.parameter_count)]
        lines.append(" & ".join(cell.replace("–", "--") for cell in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    Path(path).write_text("\n".join(lines))
    return Path(path)


def format_score(value: float | None, *, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_seconds(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.1f}"


def format_count(count: int | None) -> str:
    return "–" if count is None else f"{count:,}"


def _csv_value(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(char, char) for char in str(text))
