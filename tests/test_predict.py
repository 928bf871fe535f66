"""``predict``: a saved model applied to a mixed folder, one CSV row per image, errors as rows."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from spheroid_hpo.cli import main
from spheroid_hpo.data import decode_images, read_image
from spheroid_hpo.errors import InputError
from spheroid_hpo.training import inference
from spheroid_hpo.training.models import create_model
from spheroid_hpo.training.predict import predict_images
from spheroid_hpo.training.saved_model import ModelInfo, load_model, save_model

CLASSES = ("0_background", "1_dead_cells", "2_live_outside", "3_live_inside")
# Not ImageNet's: a model's own statistics must be the ones applied.
MEAN, STD = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A run folder with an (untrained, seeded) SqueezeNet saved for 32 px images."""
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = create_model("squeezenet1_1", num_classes=len(CLASSES))
    save_model(folder / "model.pt", model, ModelInfo(
        architecture="squeezenet1_1", class_names=CLASSES, image_size=32, mean=MEAN, std=STD,
    ))
    return folder


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """PNG, 16-bit TIFF, JPEG (one in a subfolder), a truncated PNG, a text file and a hidden image."""
    root = tmp_path_factory.mktemp("mixed") / "images"
    (root / "nested" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "a.png")
    # 12-bit camera values in a 16-bit file: read_image stretches them by their own range.
    tifffile.imwrite(root / "b.tif", rng.integers(1000, 4000, (50, 50), dtype=np.uint16))
    Image.fromarray(rng.integers(0, 255, (36, 36), dtype=np.uint8)).save(root / "nested" / "deeper" / "c.jpg")
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(root / "nested" / "d.JPEG")
    good = (root / "a.png").read_bytes()
    (root / "broken.png").write_bytes(good[: len(good) // 2])
    (root / "notes.txt").write_text("not an image\n")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / ".hidden.png")
    return root


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_mixed_folder_gives_one_row_per_image_with_errors_as_rows(model_dir, mixed_folder, tmp_path):
    out = tmp_path / "predictions.csv"
    summary = predict_images(model=model_dir, inputs=[mixed_folder], out=out, device="cpu")

    rows = _read_rows(out)
    by_name = {Path(row["path"]).name: row for row in rows}
    # Images only (the text file and the hidden image are skipped as by the data package), sub-folders included.
    assert sorted(by_name) == ["a.png", "b.tif", "broken.png", "c.jpg", "d.JPEG"]
    assert list(rows[0]) == ["path", "predicted_class", *(f"p_{c}" for c in CLASSES), "error"]
    assert summary.images == 5 and summary.errors == 1

    broken = by_name["broken.png"]
    assert broken["error"] and broken["predicted_class"] == "" and broken[f"p_{CLASSES[0]}"] == ""
    for name in ("a.png", "b.tif", "c.jpg", "d.JPEG"):
        row = by_name[name]
        assert row["error"] == ""
        probabilities = np.array([float(row[f"p_{c}"]) for c in CLASSES])
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert row["predicted_class"] == CLASSES[int(probabilities.argmax())]
        assert Path(row["path"]).exists()


def test_probabilities_use_the_training_decoder_and_the_saved_statistics(model_dir, mixed_folder, tmp_path):
    out = tmp_path / "predictions.csv"
    predict_images(model=model_dir / "model.pt", inputs=[mixed_folder / "b.tif", mixed_folder / "a.png"],
                   out=out, device="cpu")
    rows = _read_rows(out)
    assert [Path(row["path"]).name for row in rows] == ["b.tif", "a.png"]  # the order given

    # The same images through the data package and the engine, with the model's own mean and std.
    model, info = load_model(model_dir, device="cpu")
    images, problems = decode_images(mixed_folder, ["b.tif", "a.png"], image_size=info.image_size)
    assert problems == []
    expected = torch.softmax(inference.predict_logits(model, images, mean=MEAN, std=STD), dim=1).numpy()
    got = np.array([[float(row[f"p_{c}"]) for c in CLASSES] for row in rows])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # ImageNet statistics would give other probabilities: the saved ones were really applied.
    imagenet = torch.softmax(inference.predict_logits(model, images), dim=1).numpy()
    assert not np.allclose(got, imagenet, atol=1e-4)
    # The 16-bit TIFF was stretched by its own range, not divided by 255 (which would saturate it).
    assert read_image(mixed_folder / "b.tif").max() == pytest.approx(1.0)


def test_a_named_non_image_file_gets_a_row_saying_why(model_dir, mixed_folder, tmp_path):
    out = tmp_path / "predictions.csv"
    summary = predict_images(model=model_dir, inputs=[mixed_folder / "notes.txt", mixed_folder / "a.png"],
                             out=out, device="cpu")
    rows = _read_rows(out)
    assert [Path(row["path"]).name for row in rows] == ["notes.txt", "a.png"]
    assert "not an image file" in rows[0]["error"] and ".txt" in rows[0]["error"]
    assert rows[1]["error"] == "" and rows[1]["predicted_class"] in CLASSES
    assert summary.errors == 1


def test_bad_inputs_are_input_errors_and_write_nothing(model_dir, tmp_path):
    out = tmp_path / "predictions.csv"
    with pytest.raises(InputError, match="does not exist"):
        predict_images(model=model_dir, inputs=[tmp_path / "missing"], out=out, device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    with pytest.raises(InputError, match="no image files"):
        predict_images(model=model_dir, inputs=[empty], out=out, device="cpu")
    with pytest.raises(InputError, match="no model file"):
        predict_images(model=tmp_path, inputs=[empty], out=out, device="cpu")
    assert not out.exists()
    assert list(tmp_path.glob(".predictions.csv*")) == []


def test_cli_writes_the_csv_and_exits_2_on_user_errors(model_dir, mixed_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli.csv"
    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", "predict", "--model", str(model_dir), str(mixed_folder),
                                      "--out", str(out), "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    assert len(_read_rows(out)) == 5
    assert "1 could not be read" in capsys.readouterr().out

    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", "predict", "--model", str(model_dir), str(tmp_path / "nope"),
                                      "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_predictions_are_an_independent_forward_pass_on_known_images(tmp_path):
    """Pixels / 255 (kept as float16), the saved mean and std, the network in eval mode, softmax: computed here
    without the package's decoder or inference code, so a change to either that alters predictions fails, whatever
    rows still sum to."""
    torch.manual_seed(1)
    network = create_model("squeezenet1_1", num_classes=len(CLASSES))
    with torch.no_grad():
        network.classifier[1].weight.mul_(20)  # confident logits, so the predicted class is well defined
    save_model(tmp_path / "model.pt", network, ModelInfo(
        architecture="squeezenet1_1", class_names=CLASSES, image_size=32, mean=MEAN, std=STD,
    ))
    rng = np.random.default_rng(7)
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = {  # 8-bit RGB at the model's size: no resizing between the file and the network
        "noise.png": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        "dark.png": rng.integers(0, 40, (32, 32, 3), dtype=np.uint8),
        "bright.png": rng.integers(200, 256, (32, 32, 3), dtype=np.uint8),
        "ramp.png": np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 32, 3)).copy(),
    }
    for name, array in pixels.items():
        Image.fromarray(array).save(folder / name)

    out = tmp_path / "predictions.csv"
    predict_images(model=tmp_path / "model.pt", inputs=[folder / name for name in pixels], out=out, device="cpu")

    reference = create_model("squeezenet1_1", num_classes=len(CLASSES))
    reference.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"])
    reference.eval()
    # Decoded images are kept as float16 in [0, 1] (spheroid_hpo.data), so the reference rounds them the same way.
    batch = (torch.from_numpy(np.stack(list(pixels.values()))).permute(0, 3, 1, 2).float() / 255.0).half().float()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(reference((batch - mean) / std).double(), dim=1).numpy()

    rows = _read_rows(out)
    assert [Path(row["path"]).name for row in rows] == list(pixels)
    got = np.array([[float(row[f"p_{c}"]) for c in CLASSES] for row in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [row["predicted_class"] for row in rows] == [CLASSES[i] for i in expected.argmax(axis=1)]
    assert all(np.sort(p)[-1] - np.sort(p)[-2] > 1e-3 for p in expected)  # no near-tie decides a class
