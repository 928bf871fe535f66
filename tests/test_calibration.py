"""Calibrated probabilities (temperature on validation, ECE) and test-time augmentation."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spheroid_hpo.cli import main
from spheroid_hpo.data import load_dataset
from spheroid_hpo.training import inference
from spheroid_hpo.training.calibration import (
    calibrate,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.models import create_model
from spheroid_hpo.training.predict import predict_images
from spheroid_hpo.training.run import run_training
from spheroid_hpo.training.saved_model import ModelInfo, load_model, save_model
from spheroid_hpo.training.tta import dihedral_views, tta_probabilities

CLASSES = ("0_background", "1_dead_cells", "2_live_outside", "3_live_inside")


def _overconfident_logits(n: int = 400, k: int = 4, accuracy: float = 0.7, scale: float = 12.0, seed: int = 0):
    """Logits that put almost all mass on their top class, which is right only ``accuracy`` of the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    wrong = rng.random(n) > accuracy
    predicted = np.where(wrong, (labels + rng.integers(1, k, n)) % k, labels)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), predicted] += scale
    return torch.tensor(logits, dtype=torch.float32), torch.tensor(labels)


def test_ece_of_a_hand_computed_example():
    # Two bins used: confidence 0.9 (2 images, 1 right) and 0.6 (2 images, both right).
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(p, labels) == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6))
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_temperature_lowers_nll_and_ece_of_overconfident_logits():
    logits, labels = _overconfident_logits()
    temperature = fit_temperature(logits, labels)
    assert temperature > 2.0  # overconfident logits are softened
    assert negative_log_likelihood(logits, labels, temperature) < 0.5 * negative_log_likelihood(logits, labels)
    raw = torch.softmax(logits, 1).numpy()
    calibrated = torch.softmax(logits / temperature, 1).numpy()
    assert expected_calibration_error(calibrated, labels.numpy()) < 0.5 * expected_calibration_error(raw, labels)
    assert (calibrated.argmax(1) == raw.argmax(1)).all()  # a temperature never changes the predicted class
    # Already-calibrated logits keep a temperature near 1.
    rng = np.random.default_rng(1)
    fair = torch.tensor(rng.normal(0, 1, (4000, 3)), dtype=torch.float32)
    fair_labels = torch.tensor([rng.choice(3, p=row) for row in torch.softmax(fair.double(), 1).numpy()])
    assert fit_temperature(fair, fair_labels) == pytest.approx(1.0, abs=0.15)


def test_calibrate_lowers_validation_nll_of_a_deliberately_overconfident_model(demo_dir, tmp_path):
    dataset = load_dataset(demo_dir, image_size=32, manifest_path=tmp_path / "splits.csv", splits=("val",))
    torch.manual_seed(0)
    model = create_model("squeezenet1_1", num_classes=4).eval()
    with torch.no_grad():  # a head 50x too large: near-one-hot softmax on a model that knows nothing
        model.classifier[1].weight.mul_(50.0)
        model.classifier[1].bias.normal_(0, 5.0)
    calibration = calibrate(model, val_images=dataset.val.images, val_labels=dataset.val.labels)
    val = calibration.scores["val"]
    assert calibration.temperature > 1.0
    assert val["nll_after"] < val["nll_before"]
    assert val["ece_after"] <= val["ece_before"]


def test_training_stores_the_temperature_and_reports_ece_before_and_after(demo_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    metrics = run_training(data_dir=data, out_dir=tmp_path / "run", arch="resnet18",
                           hyperparams=Hyperparams(epochs=1, lr=1e-3, rotation=15.0, batch_size=8),
                           image_size=32, device="cpu", progress=False)
    calibration = json.loads((tmp_path / "run" / "metrics.json").read_text())["calibration"]
    assert calibration == json.loads(json.dumps(metrics.calibration))
    assert calibration["ece_bins"] == 15
    for split in ("val", "test"):
        assert {"nll_before", "nll_after", "ece_before", "ece_after"} <= set(calibration[split])
    assert calibration["val"]["nll_after"] <= calibration["val"]["nll_before"] + 1e-12
    _, info = load_model(tmp_path / "run")
    assert info.temperature == calibration["temperature"] and info.temperature != 1.0
    assert info.uncertain_entropy == calibration["uncertain_entropy"]
    assert (tmp_path / "run" / "reliability.png").stat().st_size > 0


def test_the_8_views_are_the_dihedral_group():
    image = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    views = dihedral_views(image)
    assert len(views) == 8
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8  # all distinct on an asymmetric image
    assert torch.equal(views[0], image)
    assert all(v.shape == image.shape for v in views)


def test_tta_of_a_rotation_invariant_input_gives_agreement_one():
    torch.manual_seed(0)
    model = create_model("squeezenet1_1", num_classes=4).eval()
    grid = torch.linspace(-1, 1, 32)
    radius = (grid.view(-1, 1) ** 2 + grid.view(1, -1) ** 2).sqrt()
    disk = torch.stack([(radius < r).float() * 0.8 + 0.1 for r in (0.3, 0.6, 0.9)])  # 3 radially symmetric images
    images = disk.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    result = tta_probabilities(lambda x: inference.predict_logits(model, x), images)
    assert torch.equal(result.agreement, torch.ones(3))
    plain = torch.softmax(inference.predict_logits(model, images), 1)
    torch.testing.assert_close(result.probabilities, plain, atol=1e-5, rtol=0)
    # A random image is not invariant: the views differ, so their average is not the plain prediction.
    noise = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    noisy = tta_probabilities(lambda x: inference.predict_logits(model, x), noise)
    assert not torch.allclose(noisy.probabilities, torch.softmax(inference.predict_logits(model, noise), 1), atol=1e-4)
    assert ((noisy.entropy >= 0) & (noisy.entropy <= math.log(4) + 1e-6)).all()


@pytest.fixture()
def hot_model(tmp_path) -> Path:
    """A model.pt with a temperature of 3 and an uncertainty threshold halfway to the maximum entropy."""
    torch.manual_seed(0)
    model = create_model("squeezenet1_1", num_classes=4)
    return save_model(tmp_path / "model.pt", model, ModelInfo(
        architecture="squeezenet1_1", class_names=CLASSES, image_size=32, mean=inference.IMAGENET_MEAN,
        std=inference.IMAGENET_STD, temperature=3.0, uncertain_entropy=0.5 * math.log(4),
    ))


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _probs(path: Path) -> np.ndarray:
    with open(path, newline="") as handle:
        return np.array([[float(row[f"p_{c}"]) for c in CLASSES] for row in csv.DictReader(handle)])


def test_predict_uses_the_temperature_and_no_calibration_gives_raw_softmax(hot_model, images, tmp_path,
                                                                          monkeypatch):
    model, info = load_model(hot_model)
    from spheroid_hpo.data import decode_images
    decoded, _ = decode_images(images, sorted(p.name for p in images.iterdir()), image_size=32)
    logits = inference.predict_logits(model, decoded).double()

    calibrated = _probs(predict_images(model=hot_model, inputs=[images], out=tmp_path / "c.csv", device="cpu").out)
    np.testing.assert_allclose(calibrated, torch.softmax(logits / 3.0, 1).numpy(), atol=2e-6)
    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", "predict", "--model", str(hot_model), str(images),
                                      "--out", str(tmp_path / "raw.csv"), "--device", "cpu", "--no-calibration"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    np.testing.assert_allclose(_probs(tmp_path / "raw.csv"), torch.softmax(logits, 1).numpy(), atol=2e-6)


def test_predict_tta_adds_agreement_entropy_and_the_uncertain_flag(hot_model, images, tmp_path):
    out = predict_images(model=hot_model, inputs=[images], out=tmp_path / "tta.csv", device="cpu", tta=True).out
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[-4:] == ["tta_agreement", "entropy", "uncertain", "error"]
    threshold = 0.5 * math.log(4)
    for row in rows:
        assert float(row["tta_agreement"]) in {k / 8 for k in range(1, 9)}
        assert row["uncertain"] == str(float(row["entropy"]) > threshold).lower()
    assert {row["uncertain"] for row in rows} <= {"true", "false"}
