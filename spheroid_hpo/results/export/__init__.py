"""``spheroid-hpo export``: the winning model as a bioimage.io package, an ONNX file or TorchScript.

Every export is checked before it is written: ONNX with onnxruntime and
TorchScript after reloading, against PyTorch on real test images (max abs
probability difference <= ``TOLERANCE``); a bioimage.io package with
``bioimageio.core``'s ``test_model``, offline. ONNX and bioimage.io need the
``export`` extra (``pip install 'spheroid-hpo[export]'``); TorchScript needs torch only.
"""

from spheroid_hpo.results.export._formats import TOLERANCE, ExportCheckError
from spheroid_hpo.results.export._registry import (
    ExportFormat,
    ExportJob,
    export_format,
    format_for_file,
    format_names,
)
from spheroid_hpo.results.export._request import ExportRequest, ExportResult, export_model

__all__ = [
    "TOLERANCE", "ExportCheckError", "ExportFormat", "ExportJob", "ExportRequest", "ExportResult", "export_format",
    "export_model", "format_for_file", "format_names",
]
