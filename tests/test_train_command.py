"""`spheroid-hpo train`, `check-data` and `demo-data` as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from console_script import run_in_process
from PIL import Image

from spheroid_hpo.training.hyperparams import Hyperparams
from spheroid_hpo.training.run import run_training
from spheroid_hpo.training.saved_model import load_model

FAST = dict(arch="squeezenet1_1", hyperparams=Hyperparams(epochs=2, lr=1e-3, rotation=15.0, batch_size=8),
            image_size=32, seed=0, device="cpu", progress=False)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spheroid_hpo", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture()
def data(demo_dir, tmp_path) -> Path:
    """A private copy of the demo data (runs write their split manifest into it)."""
    copy = tmp_path / "data"
    shutil.copytree(demo_dir, copy)
    return copy


def test_train_writes_the_run_folder(data, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--data", str(data), "--arch", "squeezenet1_1", "--epochs", "2", "--lr", "1e-3",
                 "--rotation", "15", "--batch-size", "8", "--image-size", "32", "--out", str(out),
                 "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "validation macro-F1" in result.stdout and "test" in result.stdout

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_names"] == ["0_background", "1_dead_cells", "2_live_outside", "3_live_inside"]
    for split in ("validation", "test"):
        section = metrics[split]
        assert {"precision", "recall", "f1", "macro_f1", "accuracy", "confusion"} <= set(section)
        assert len(section["f1"]) == 4 and np.array(section["confusion"]).shape == (4, 4)
        assert section["macro_f1"] == pytest.approx(np.mean(section["f1"]))
    assert [record["epoch"] for record in metrics["history"]] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1"} <= set(metrics["history"][0])
    assert metrics["parameter_count"] > 100_000 and metrics["wall_time_seconds"] > 0
    assert metrics["config"]["arch"] == "squeezenet1_1" and metrics["config"]["image_size"] == 32
    assert sum(metrics["split_sizes"].values()) == sum(1 for _ in data.rglob("*.png"))

    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["architecture"] == "squeezenet1_1"
    assert payload["class_names"] == metrics["class_names"]
    assert payload["image_size"] == 32 and len(payload["mean"]) == 3 and len(payload["std"]) == 3
    model, info = load_model(out)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4) and info.image_size == 32

    for figure in ("curves.png", "confusion.png"):
        with Image.open(out / figure) as image:
            assert image.width > 300 and image.height > 200


def test_the_same_seed_gives_the_same_metrics(data, tmp_path):
    first = run_training(data_dir=data, out_dir=tmp_path / "a", **FAST)
    second = run_training(data_dir=data, out_dir=tmp_path / "b", **FAST)

    def strip(history):
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in history]

    assert strip(first.history) == strip(second.history)
    assert first.validation == second.validation and first.test == second.test


def test_a_corrupt_image_is_skipped_with_one_warning_line(data, tmp_path, monkeypatch, capsys):
    (data / "1_dead_cells" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (data / "Thumbs.db").write_bytes(b"junk")
    (data / "2_live_outside" / "notes.txt").write_text("imaged on tuesday")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process(monkeypatch, capsys, "train", "--data", str(data), "--epochs", "1", "--image-size",
                                  "32", "--arch", "squeezenet1_1", "--out", str(tmp_path / "run"), "--device", "cpu")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "broken.png" in line]
    assert len(warnings) == 1 and "skipping" in warnings[0]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [item["path"] for item in metrics["skipped_images"]] == ["1_dead_cells/broken.png"]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "does not exist"),
        ("one_class", "two"),
        ("too_few", "1_dead_cells"),
        ("flat", "ROOT/<class"),
    ],
)
def test_bad_data_folders_exit_2_with_the_fix(layout, message, data, tmp_path, monkeypatch, capsys):
    if layout == "missing":
        target = tmp_path / "nowhere"
    elif layout == "one_class":
        target = tmp_path / "one"
        shutil.copytree(data / "0_background", target / "0_background")
    elif layout == "too_few":
        target = data
        for extra in sorted((data / "1_dead_cells").glob("*.png"))[2:]:
            extra.unlink()
    else:
        target = tmp_path / "flat"
        target.mkdir()
        for image in sorted(data.rglob("*.png"))[:6]:
            shutil.copy(image, target / image.name)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process(monkeypatch, capsys, "train", "--data", str(target), "--epochs", "1", "--image-size",
                                  "32", "--out", str(tmp_path / "run"))
    assert code == 2, err
    assert message in err
    assert "Traceback" not in err  # an exception other than SystemExit would fail the test before this
    assert len(err.strip().splitlines()) == 1


def test_check_data_reports_formats_depths_sizes_and_problems(tmp_path):
    root = tmp_path / "lab"
    (root / "live").mkdir(parents=True)
    (root / "dead").mkdir()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "live" / "a.png")
    tifffile.imwrite(root / "live" / "b.tif", (np.arange(40 * 50, dtype=np.uint16) * 13).reshape(40, 50))
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "dead" / "c.jpg")
    (root / "dead" / "empty.png").write_bytes(b"")
    (root / ".DS_Store").write_bytes(b"x")
    result = cli("check-data", str(root), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    classes = {row["name"]: row for row in report["classes"]}
    assert classes["live"]["count"] == 2 and classes["live"]["formats"] == ["PNG", "TIFF"]
    assert classes["live"]["bit_depths"] == [8, 16]
    assert classes["dead"]["count"] == 1
    assert [problem["path"] for problem in report["problems"]] == ["dead/empty.png"]
    table = cli("check-data", str(root), cwd=tmp_path)
    assert "empty.png" in table.stdout and "live" in table.stdout


def test_demo_data_command_is_deterministic(tmp_path):
    for name in ("a", "b"):
        assert cli("demo-data", str(tmp_path / name), "--per-class", "6", "--size", "32", "--seed", "3",
                   cwd=tmp_path).returncode == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    assert len({f.parts[0] for f in files_a}) == 4
