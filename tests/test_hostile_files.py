"""Files someone else made: other formats behind image names, names that are not UTF-8,
output folders that cannot be written. Each runs the real command line in a child process,
because what is checked (no external program started, nothing written, exit code) is
about the process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from spheroid_hpo.training.models import create_model
from spheroid_hpo.training.saved_model import ModelInfo, save_model

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("a", "b")


def _cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "spheroid_hpo", *map(str, args)], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})},
    )


def _finished(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained, seeded SqueezeNet for 32 px images of classes a and b."""
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    save_model(folder / "model.pt", create_model("squeezenet1_1", num_classes=len(CLASSES)), ModelInfo(
        architecture="squeezenet1_1", class_names=CLASSES, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3,
    ))
    return folder


def _two_class_folder(root: Path, per_class: int = 6) -> Path:
    for index, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (32, 32), color=40 + 150 * index + 3 * i).save(root / name / f"img{i:02d}.png")
    return root


def test_an_eps_file_named_png_is_never_decoded_by_check_data_train_or_predict(tmp_path: Path, model_dir: Path):
    """A real EPS file (written by Pillow's own EPS writer) named evil.png. A fake `gs` first on
    PATH records whether Pillow's EPS plugin ever started Ghostscript; it must not, and the file is
    a skipped problem file with its reason in each command."""
    data = _two_class_folder(tmp_path / "data")
    Image.new("L", (32, 32), color=128).save(data / "a" / "evil.png", format="EPS")
    assert (data / "a" / "evil.png").read_bytes().startswith(b"%!PS-Adobe")
    marker = tmp_path / "GS_RAN"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    before = {path for path in tmp_path.rglob("*")}

    check = _cli("check-data", data, env=env)
    predict = _cli("predict", data / "a", "--model", model_dir, "--out", tmp_path / "p.csv", env=env)
    train = _cli("train", "--data", data, "--arch", "squeezenet1_1", "--epochs", "1", "--image-size", "32",
                 "--batch-size", "4", "--device", "cpu", "--split-manifest", tmp_path / "splits.csv",
                 "--out", tmp_path / "t", env=env)
    (check_rc, check_out, check_err), (predict_rc, _, predict_err), (train_rc, _, train_err) = (
        _finished(check), _finished(predict), _finished(train))

    assert not marker.exists(), f"Ghostscript was started: {marker.read_text()}"
    assert check_rc == 0, check_err
    assert "EPS" not in check_out
    assert "evil.png" in check_out and "not a recognised image" in check_out
    assert predict_rc == 0, predict_err
    rows = (tmp_path / "p.csv").read_text().splitlines()
    evil = [row for row in rows if "evil.png" in row]
    assert len(evil) == 1 and "not a recognised image" in evil[0]
    assert train_rc == 0, train_err
    assert "evil.png" in train_err and "not a recognised image" in train_err
    written = {path for path in tmp_path.rglob("*")} - before
    assert all(path.is_relative_to(tmp_path / "t") or path.name in ("p.csv", "splits.csv") for path in written), (
        sorted(map(str, written)))
