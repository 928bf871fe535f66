"""Where the real data sets live. A test module that asks for the `ifc_cellcycle` fixture
imports it as `from real_data import ifc_cellcycle_fixture  # noqa: F401`.

A clean clone has `shared/` beside it, so the data lie at ../shared/realdata from the repository
root. They are read-only: a test that changes files copies them to a temporary folder first.
Without them a test is skipped on a workstation, but fails under CI=true, where a missing data
set means the real-data tests silently stopped running.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
IFC_CELLCYCLE = REAL_DATA / "ifc_cellcycle"  # 3,419 brightfield cell crops, 40 px, 16-bit TIFF, 7 classes


def require(folder: Path) -> Path:
    """`folder` if it exists; otherwise fail under CI=true and skip elsewhere."""
    if not folder.is_dir():
        message = f"real data {folder} is missing: put the shared/ folder beside the repository"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session", name="ifc_cellcycle")
def ifc_cellcycle_fixture() -> Path:
    """The ifc_cellcycle folder (ROOT/<phase>/<cell>.tif), read-only."""
    return require(IFC_CELLCYCLE)
