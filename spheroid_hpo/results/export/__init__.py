"""``spheroid-hpo export``: the winning model as a bioimage.io package, an ONNX file or TorchScript.

Every export is checked before it is written: ONNX with onnxruntime and
TorchScript after reloading, against PyTorch on real test images (max abs
probability difference <= ``TOLERANCE``); a bioimage.io package with
``bioimageio.core``'s ``test_model``, offline. ONNX and bioimage.io need the
``export`` extra (``pip install 'spheroid-hpo[export]'``); TorchScript needs torch only.
"""

from spheroid_hpo.results.export._formats import TOLERANCE, ExportCheckError
from spheroid_hpo.results.export._request import (
    DEFAULT_FILE_NAMES,
    FORMATS,
    ExportRequest,
    ExportResult,
    export_model,
)

__all__ = [
    "DEFAULT_FILE_NAMES",
    "FORMATS", "TOLERANCE", "ExportCheckError", "ExportRequest", "ExportResult", "export_model"]
