"""``export``: ONNX and TorchScript agree with PyTorch; ``predict`` on ONNX equals ``predict`` on model.pt."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spheroid_hpo.cli import main
from spheroid_hpo.errors import InputError
from spheroid_hpo.results.export import (
    TOLERANCE,
    ExportCheckError,
    ExportRequest,
    _formats,
    export_model,
    format_for_file,
)
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.predict import predict_images
from spheroid_hpo.training.run import run_training
from spheroid_hpo.training.saved_model import load_model

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'spheroid-hpo[export]'")

# ResNet-18: after one epoch its logits already differ between images (SqueezeNet's final ReLU
# leaves them all 0, which any export would reproduce), so the agreement checks are not vacuous.
FAST = dict(arch="resnet18", hyperparams=Hyperparams(epochs=1, lr=1e-3, rotation=15.0, batch_size=8), image_size=32,
            seed=0, device="cpu", progress=False)


@pytest.fixture(scope="module")
def run_dir(demo_dir, tmp_path_factory) -> Path:
    """A run folder trained for one epoch on a private copy of the demo data."""
    root = tmp_path_factory.mktemp("export")
    data = root / "data"
    shutil.copytree(demo_dir, data)
    run_training(data_dir=data, out_dir=root / "run", **FAST)
    _, info = load_model(root / "run")
    assert info.temperature != 1.0
    return root / "run"


@pytest.fixture(scope="module")
def onnx_export(run_dir, tmp_path_factory):
    """One ONNX export of the run, from its model.pt file (the folder is the source elsewhere), shared
    by the checks that only read it: a dynamo export takes seconds."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_model(ExportRequest(format="onnx", out=out, source=run_dir / "model.pt"))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _probabilities(rows, class_names) -> np.ndarray:
    return np.array([[float(row[f"p_{c}"]) for c in class_names] for row in rows])


@pytest.mark.parametrize("fmt, name", [("onnx", "model.onnx"), ("torchscript", "model.torchscript.pt")])
def test_export_agrees_with_pytorch_on_test_images(run_dir, tmp_path, fmt, name, request):
    if fmt == "onnx":
        result = request.getfixturevalue("onnx_export")
    else:
        result = export_model(ExportRequest(format=fmt, out=tmp_path / name, source=run_dir))
    assert result.out.is_file() and result.out.name == name
    assert result.checks["check_images"] > 0
    assert result.checks["max_abs_probability_difference"] <= TOLERANCE


def test_onnx_file_has_opset_18_dynamic_batch_and_the_model_info(run_dir, onnx_export):
    import onnx
    import onnxruntime as ort

    out = onnx_export.out
    model = onnx.load(str(out))
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a named, dynamic batch axis
    meta = json.loads(session.get_modelmeta().custom_metadata_map["spheroid_hpo"])
    _, info = load_model(run_dir)
    assert meta["class_names"] == list(info.class_names) and meta["temperature"] == info.temperature
    probabilities, logits = session.run(None, {"image": np.random.default_rng(0).random((3, 3, 32, 32),
                                                                                      dtype=np.float32)})
    assert probabilities.shape == logits.shape == (3, len(info.class_names))
    assert np.ptp(logits) > 1e-3  # a model that says something, so agreement means something
    # The probabilities output is the calibrated one: softmax of the logits over the fitted temperature.
    np.testing.assert_allclose(probabilities, torch.softmax(torch.from_numpy(logits) / info.temperature, 1).numpy(),
                               atol=1e-6)


def test_predict_on_onnx_equals_predict_on_model_pt(run_dir, demo_dir, tmp_path, onnx_export):
    onnx_file = onnx_export.out
    images = [demo_dir / "1_dead_cells", demo_dir / "3_live_inside"]
    for options in (dict(), dict(calibrated=False), dict(tta=True)):
        from_pt = _rows(predict_images(model=run_dir, inputs=images, out=tmp_path / "pt.csv", device="cpu",
                                       **options).out)
        from_onnx = _rows(predict_images(model=onnx_file, inputs=images, out=tmp_path / "onnx.csv",
                                         reader=format_for_file(onnx_file).read, **options).out)
        assert [list(r) for r in from_onnx] == [list(r) for r in from_pt]
        assert [(r["path"], r["predicted_class"], r["error"]) for r in from_onnx] == \
            [(r["path"], r["predicted_class"], r["error"]) for r in from_pt]
        _, info = load_model(run_dir)
        np.testing.assert_allclose(_probabilities(from_onnx, info.class_names),
                                   _probabilities(from_pt, info.class_names), atol=1e-5)


def test_a_disagreeing_export_is_refused_and_not_written(run_dir, tmp_path, monkeypatch):
    # An exporter bug simulated: the file computes other probabilities than PyTorch.
    real = _formats.max_probability_difference
    monkeypatch.setattr(_formats, "max_probability_difference", lambda *a: real(*a) + 1e-3)
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportCheckError, match="differs from PyTorch"):
        export_model(ExportRequest(format="onnx", out=out, source=run_dir))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_exports_and_names_the_extra_when_it_is_missing(run_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli.onnx"
    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", "export", str(run_dir), "--format", "onnx", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None) and out.is_file()
    assert "max_abs_probability_difference" in capsys.readouterr().out

    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "pip install 'spheroid-hpo[export]'" in err and len(err.strip().splitlines()) == 1


def test_export_without_data_or_with_a_bad_format_is_an_input_error(run_dir, tmp_path):
    with pytest.raises(InputError, match="unknown export format"):
        export_model(ExportRequest(format="tflite", out=tmp_path / "x", source=run_dir))
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "model.pt", bare / "model.pt")
    with pytest.raises(InputError, match="metrics.json"):
        export_model(ExportRequest(format="torchscript", out=tmp_path / "x.pt", source=bare))


def test_bioimageio_package_passes_bioimageio_core_offline(run_dir, tmp_path, monkeypatch):
    import zipfile

    import bioimageio.core
    from bioimageio.spec import load_description

    monkeypatch.setenv("BIOIMAGEIO_PERFORM_IO_CHECKS", "0")
    # The export runs bioimageio.core's test_model before it writes the zip; its summary is kept here.
    # (The written zip is tested again, as `bioimageio test` reads it in a new process, by the slow
    # test below: the three weight formats' inference once more.)
    summaries = []
    real_test_model = bioimageio.core.test_model
    monkeypatch.setattr(bioimageio.core, "test_model",
                        lambda *args, **kwargs: summaries.append(real_test_model(*args, **kwargs)) or summaries[-1])

    out = export_model(ExportRequest(format="bioimageio", out=tmp_path / "model.zip", source=run_dir)).out
    names = set(zipfile.ZipFile(out).namelist())
    assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy", "weights.pt",
            "weights.torchscript.pt", "weights.onnx"} <= names

    (summary,) = summaries
    assert summary.status == "passed", summary.format()
    ran = " ".join(d.name for d in summary.details)
    for weights in ("pytorch_state_dict", "torchscript", "onnx"):
        assert f"Reproduce test outputs from test inputs ({weights})" in ran
    # The written zip is a valid model description, its files' hashes checked, as a bioimage.io tool reads it.
    described = load_description(out, perform_io_checks=True)
    assert described.validation_summary.status in ("valid-format", "passed"), described.validation_summary.format()
    assert {w for w, entry in described.weights if entry is not None} == {"pytorch_state_dict", "torchscript", "onnx"}

    import yaml
    rdf = yaml.safe_load(zipfile.ZipFile(out).read("rdf.yaml"))
    _, info = load_model(run_dir)
    image, = rdf["inputs"]
    assert [a.get("size") for a in image["axes"][2:]] == [info.image_size] * 2
    normalise, = [p for p in image["preprocessing"] if p["id"] == "fixed_zero_mean_unit_variance"]
    assert normalise["kwargs"]["mean"] == list(info.mean) and normalise["kwargs"]["std"] == list(info.std)
    probabilities, = rdf["outputs"]
    assert [p["id"] for p in probabilities["postprocessing"][:2]] == ["scale_linear", "softmax"]
    assert probabilities["postprocessing"][0]["kwargs"]["gain"] == pytest.approx(1 / info.temperature)
    assert len(probabilities["axes"][1]["channel_names"]) == len(info.class_names)
    # The test tensors are real test images of the run and PyTorch's calibrated probabilities for them.
    with zipfile.ZipFile(out) as archive:
        test_input = np.load(archive.open("test_input.npy"))
    assert (test_input.shape == (1, 3, info.image_size, info.image_size)
            and 0 <= test_input.min() < test_input.max() <= 1)
    readme = zipfile.ZipFile(out).read("README.md").decode()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The whole test split, as in metrics.json (which may have scored under bf16 autocast, hence the tolerance).
    scores = re.search(r"accuracy ([0-9.]+), macro-F1 ([0-9.]+)", readme)
    assert float(scores.group(2)) == pytest.approx(metrics["test"]["macro_f1"], abs=0.05)
    assert '"lr": 0.001' in readme and "França" in readme and "10.1117/12.2580916" in readme
    assert any(entry.get("doi") == "10.1117/12.2580916" for entry in rdf["cite"])


def test_a_package_bioimageio_core_fails_is_not_written(run_dir, tmp_path, monkeypatch):
    from spheroid_hpo.results.export import _bioimageio

    real = _bioimageio._calibrated_probabilities
    monkeypatch.setattr(_bioimageio, "_calibrated_probabilities", lambda *a: real(*a).roll(1, dims=1))
    out = tmp_path / "model.zip"
    with pytest.raises(ExportCheckError, match="test_model failed"):
        export_model(ExportRequest(format="bioimageio", out=out, source=run_dir))
    assert list(tmp_path.iterdir()) == []


def test_export_of_a_studys_best_trial_is_calibrated_and_checked(finished_study, tmp_path):
    out = tmp_path / "best.torchscript.pt"
    result = export_model(ExportRequest(
        format="torchscript", out=out, study=finished_study.name, storage_url=finished_study.storage_url,
        artifact_dir=finished_study.artifact_dir, runs_dir=finished_study.runs_dir,
    ))
    assert "best trial" in result.description
    assert result.checks["max_abs_probability_difference"] <= TOLERANCE
    extra = {"spheroid_hpo.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    info = json.loads(extra["spheroid_hpo.json"])
    assert info["image_size"] == 32 and info["temperature"] > 0
    probabilities, logits = module(torch.rand(3, 3, 32, 32))
    torch.testing.assert_close(probabilities, torch.softmax(logits / info["temperature"], 1))


@pytest.mark.slow  # a bioimage.io export and bioimageio.core's three weight formats in a new process
def test_bioimageio_test_passes_the_package_in_a_process_that_never_imported_spheroid_hpo(run_dir, tmp_path):
    """The README's `bioimageio test spheroid.zip`, in the environment the export extra installs: a
    child process, so nothing of ours patched bioimageio or pydantic (under pydantic 2.14 it failed)."""
    out = export_model(ExportRequest(format="bioimageio", out=tmp_path / "spheroid.zip", source=run_dir)).out
    tested = subprocess.run([sys.executable, "-m", "bioimageio.core", "test", str(out)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "BIOIMAGEIO_PERFORM_IO_CHECKS": "0", "PYTHONPATH": ""})
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    for weights in ("pytorch_state_dict", "torchscript", "onnx"):
        assert f"weights.{weights}" in tested.stdout
