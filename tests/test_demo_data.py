"""The demo data set: layout, imbalance, determinism, and classes told apart by structure, not brightness."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from spheroid_hpo.data import demo as demo_data
from spheroid_hpo.data._folder import scan_folder
from spheroid_hpo.data._formats import ImageInfo, inspect_image
from spheroid_hpo.data.demo import CLASS_NAMES, class_counts, ensure_demo_data, write_demo_data
from spheroid_hpo.errors import InputError


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_demo_data(root, per_class=40, size=32, seed=0)
    return root


def _pixels_and_labels(root: Path) -> tuple[np.ndarray, np.ndarray]:
    folder = scan_folder(root)
    pixels = np.stack([np.asarray(Image.open(root / file.path), dtype=np.float64) / 255 for file in folder.files])
    return pixels, np.array([file.label for file in folder.files])


def _cv_scores(features: np.ndarray, labels: np.ndarray, model) -> tuple[float, float]:
    """Mean 5-fold accuracy and balanced accuracy (chance: 0.375 and 0.25 for these counts)."""
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    pipeline = make_pipeline(StandardScaler(), model)
    accuracy = cross_val_score(pipeline, features, labels, cv=folds).mean()
    balanced = cross_val_score(pipeline, features, labels, cv=folds, scoring="balanced_accuracy").mean()
    return accuracy, balanced


def test_writes_the_four_paper_classes_imbalanced(demo: Path) -> None:
    folder = scan_folder(demo)
    assert folder.class_names == CLASS_NAMES
    on_disk = [sum(file.label == label for file in folder.files) for label in range(4)]
    assert on_disk == [60, 24, 32, 44] == list(class_counts(40).values())
    assert folder.ignored == (".demo-data.json",)


def test_returns_the_counts_it_wrote(tmp_path: Path) -> None:
    counts = write_demo_data(tmp_path, per_class=4, size=16)
    assert counts == {name: len(list((tmp_path / name).glob("*.png"))) for name in CLASS_NAMES}
    assert min(counts.values()) == 3  # every class can still fill train, val and test


def test_images_are_8_bit_grey_pngs_of_the_requested_size(demo: Path) -> None:
    infos = {inspect_image(path) for path in demo.glob("*/*.png")}
    assert infos == {ImageInfo(format="PNG", bit_depth=8, channels=1, width=32, height=32)}


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    def snapshot(root: Path) -> dict[str, bytes]:
        files = sorted(path for path in root.rglob("*") if path.is_file())
        return {path.relative_to(root).as_posix(): path.read_bytes() for path in files}

    write_demo_data(tmp_path / "one", per_class=5, size=24, seed=7)
    write_demo_data(tmp_path / "two", per_class=5, size=24, seed=7)
    write_demo_data(tmp_path / "other", per_class=5, size=24, seed=8)
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")
    other = snapshot(tmp_path / "other")
    assert other.keys() == snapshot(tmp_path / "one").keys()
    assert all(other[name] != data for name, data in snapshot(tmp_path / "one").items() if name.endswith(".png"))


def test_mean_and_contrast_do_not_give_the_class_away(demo: Path) -> None:
    pixels, labels = _pixels_and_labels(demo)
    features = np.stack([pixels.mean(axis=(1, 2)), pixels.std(axis=(1, 2))], axis=1)
    for model in (LogisticRegression(), NearestCentroid()):
        accuracy, balanced = _cv_scores(features, labels, model)
        assert accuracy < 0.5, (type(model).__name__, accuracy)
        assert balanced < 0.4, (type(model).__name__, balanced)


def test_cell_structure_does_give_the_class_away(demo: Path) -> None:
    pixels, labels = _pixels_and_labels(demo)
    z = (pixels - pixels.mean(axis=(1, 2), keepdims=True)) / pixels.std(axis=(1, 2), keepdims=True)
    grad_y, grad_x = np.gradient(z, axis=(1, 2))
    features = np.stack(
        [
            (z < -2.5).mean(axis=(1, 2)),  # very dark pixels: dead fragments, cell rims
            (z > 1.5).mean(axis=(1, 2)),  # bright pixels: halos around live cells
            np.hypot(grad_y, grad_x).mean(axis=(1, 2)),  # edge density: packed cell boundaries
        ],
        axis=1,
    )
    accuracy, balanced = _cv_scores(features, labels, LogisticRegression())
    assert accuracy > 0.7 and balanced > 0.65, (accuracy, balanced)


def test_refuses_to_write_into_a_folder_that_holds_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists and is not empty; pass a new or empty folder"):
        write_demo_data(tmp_path, per_class=3, size=16)
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"per_class": 0}, "per_class=0 is invalid; use an integer from 3 to 5000"),
        ({"per_class": 2}, "per_class=2 is invalid; use an integer from 3 to 5000"),  # a study file's minimum too
        ({"per_class": 10**8}, "per_class=100000000 is invalid; use an integer from 3 to 5000"),
        ({"size": 8}, "size=8 is invalid; use an integer from 16 to 1024"),
        ({"size": 100_000}, "size=100000 is invalid; use an integer from 16 to 1024"),
        ({"seed": -1}, "seed=-1 is invalid; use an integer from 0 to 4294967295"),
        ({"size": 32.0}, "size=32.0 is invalid"),
    ],
)
def test_bad_settings_name_the_value_and_the_limit(tmp_path: Path, settings: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        write_demo_data(tmp_path / "demo", **settings)
    assert not (tmp_path / "demo").exists()


def test_ensure_writes_once_then_reuses_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    assert ensure_demo_data(root, per_class=3, size=16) == root
    (root / "splits.csv").write_text("path,class,split\n")  # what a training run leaves behind
    assert ensure_demo_data(root, per_class=3, size=16) == root
    assert (root / "splits.csv").exists()


def test_ensure_lets_concurrent_workers_share_one_write(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "demo"
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: ensure_demo_data(root, per_class=3, size=16), range(4)))
    assert results == [root] * 4
    assert [path.name for path in root.parent.iterdir()] == ["demo"]  # no staging folder left behind
    assert len(scan_folder(root).files) == sum(class_counts(3).values())


def test_an_interrupted_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(label: int, **_) -> np.ndarray:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_data, "render_image", fail)
    with pytest.raises(KeyboardInterrupt):
        write_demo_data(tmp_path / "demo", per_class=3, size=16)
    assert list(tmp_path.iterdir()) == []


def test_ensure_never_writes_over_other_files(tmp_path: Path) -> None:
    (tmp_path / "my_images").mkdir()
    with pytest.raises(InputError, match="not empty"):
        ensure_demo_data(tmp_path, per_class=3, size=16)
    assert [path.name for path in tmp_path.iterdir()] == ["my_images"]


def test_ensure_refuses_demo_data_made_with_other_settings(tmp_path: Path) -> None:
    write_demo_data(tmp_path, per_class=3, size=16, seed=0)
    with pytest.raises(InputError, match=r"was written with other settings.*seed=0.*seed=1.*delete the folder"):
        ensure_demo_data(tmp_path, per_class=3, size=16, seed=1)
