"""`train` and `launch` on a real folder they have never seen, with no flag (issue 20, point 8).

``../shared/realdata/ifc_cellcycle``: 3,419 real brightfield cell crops (16-bit 40 px TIFF) in 7
imbalanced classes (16 to 900 images), read-only; every manifest goes to a temporary folder. Before
the near-duplicate fixes, check-data put 55% of it in one near group and a split could fail on it.
The default tests run on a copy of its first 30 images per class (all of Anaphase's 16 and
Telophase's 28), so they stay fast; the slow one trains on the whole folder and checks it learns.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from console_script import run_in_process
from optuna.trial import TrialState
from real_data import IFC_CELLCYCLE, require

CLASSES = ("Anaphase", "G1", "G2", "Metaphase", "Prophase", "S_phase", "Telophase")
IMAGES = 3419


@pytest.fixture(scope="module")
def real_folder() -> Path:
    return require(IFC_CELLCYCLE)


@pytest.fixture(scope="module")
def real_subset(real_folder, tmp_path_factory) -> Path:
    """A copy of the first 30 images of each class, file bytes unchanged."""
    root = tmp_path_factory.mktemp("real") / "ifc_subset"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for path in sorted((real_folder / name).iterdir())[:30]:
            shutil.copyfile(path, root / name / path.name)
    return root


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def cli(monkeypatch, capsys, *args: str, cwd: Path) -> tuple[int, str]:
    """``spheroid-hpo ARGS`` as typed in ``cwd``, in this process (a launch still starts its worker as a
    process of its own); (exit code, stdout and stderr)."""
    monkeypatch.chdir(cwd)
    code, out, err = run_in_process(monkeypatch, capsys, *args)
    return code, out + err


def _train(data: Path, cwd: Path, monkeypatch, capsys, *, epochs: int) -> tuple[str, dict]:
    code, output = cli(monkeypatch, capsys, "train", "--data", str(data), "--out", "run", "--split-manifest",
                       "splits.csv", "--arch", "squeezenet1_1", "--epochs", str(epochs), "--lr", "1e-3",
                       "--batch-size", "32", "--image-size", "32", "--device", "cpu", "--precision", "fp32", cwd=cwd)
    assert code == 0, output[-3000:]
    metrics = json.loads((cwd / "run" / "metrics.json").read_text())
    assert tuple(metrics["class_names"]) == CLASSES
    for section in ("validation", "test"):  # every class, even the smallest, in every split
        assert all(sum(row) > 0 for row in metrics[section]["confusion"]), section
    return output, metrics


def test_train_on_real_images_with_no_flag(real_subset, tmp_path, monkeypatch, capsys):
    before = _listing(real_subset)
    output, metrics = _train(real_subset, tmp_path, monkeypatch, capsys, epochs=1)
    assert _listing(real_subset) == before  # the data folder stays untouched: the manifest went elsewhere
    assert sum(metrics["split_sizes"].values()) == 30 * 5 + 16 + 28
    assert "classes are imbalanced" not in output  # 30 vs 16 images: under the 3x line


@pytest.mark.slow
def test_train_on_the_whole_real_folder_splits_every_class_and_learns(real_folder, tmp_path, monkeypatch, capsys):
    before = _listing(real_folder)
    output, metrics = _train(real_folder, tmp_path, monkeypatch, capsys, epochs=3)
    assert _listing(real_folder) == before  # a read-only folder stays untouched: the manifest went elsewhere
    assert "warning: classes are imbalanced: 'G1' has 56.2x the images of 'Anaphase'" in output
    assert sum(metrics["split_sizes"].values()) == IMAGES
    # Learning, not a constant guess: predicting the largest class (26% of the images) for every
    # image scores macro-F1 under 0.06; three epochs at 32 px reach well above.
    assert metrics["validation"]["macro_f1"] > 0.15, metrics["validation"]


def test_launch_on_real_images_runs_two_trials_with_no_flag(real_subset, tmp_path, monkeypatch, capsys):
    study = tmp_path / "real.toml"
    study.write_text(f"""
[study]
name = "real"
architectures = ["squeezenet1_1"]
n_trials = 2

[search_space]
epochs = {{ choices = [1] }}
lr = {{ low = 1e-4, high = 3e-3, log = true }}
rotation = {{ low = 0.0, high = 20.0 }}
batch_size = {{ low = 16, high = 32 }}

[pruner]
name = "none"

[data]
path = "{real_subset}"
image_size = 32
""")
    before = _listing(real_subset)
    code, output = cli(monkeypatch, capsys, "launch", "--workers", "1", "--study", str(study), "--runs-dir", "runs",
                       cwd=tmp_path)
    assert code == 0, output[-3000:]
    assert _listing(real_subset) == before

    trials = optuna.load_study(study_name="real.squeezenet1_1",
                               storage=f"sqlite:///{tmp_path / 'runs' / 'real' / 'study.db'}").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    rows = (tmp_path / "runs" / "real" / "splits.csv").read_text().splitlines()
    assert len(rows) == 30 * 5 + 16 + 28 + 1
