"""The registries users extend: export formats and report outputs; errors list the valid names."""

from __future__ import annotations

from pathlib import Path

import pytest

from spheroid_hpo.errors import InputError
from spheroid_hpo.results.export import ExportRequest, export_format, export_model, format_for_file, format_names
from spheroid_hpo.results.report import REPORT_OUTPUTS, report_output_names
from spheroid_hpo.training.onnx_model import load_onnx_model


def test_an_unknown_export_format_lists_the_registered_ones():
    with pytest.raises(InputError, match=r"unknown export format 'onx' \(did you mean 'onnx'\?\); "
                                         r"choose one of bioimageio, onnx, torchscript$"):
        export_model(ExportRequest(format="onx", source=Path("run")))


def test_each_format_has_its_own_file_name_and_predict_reads_back_the_readable_ones():
    names = format_names()
    assert len({export_format(name).file_name for name in names}) == len(names)
    assert format_for_file(Path("runs/x/model.onnx")).read is load_onnx_model
    assert format_for_file(Path("MODEL.ONNX")).name == "onnx"
    # a model.pt (or the TorchScript file, which predict does not read) goes to the model.pt loader
    assert format_for_file(Path("runs/x/model.pt")) is None
    assert format_for_file(Path(export_format("torchscript").file_name)) is None


def test_the_report_outputs_are_distinct_files():
    assert len(set(report_output_names())) == len(REPORT_OUTPUTS) >= 5
    assert {"report.md", "report.html", "checklist.json", "table3.csv", "table3.tex"} <= set(report_output_names())
