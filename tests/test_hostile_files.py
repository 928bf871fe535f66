"""Files someone else made: other formats behind image names, names that are not UTF-8,
output folders that cannot be written. Each runs the real command line in a child process,
because what is checked (no external program started, nothing written, exit code) is
about the process."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from console_script import run_in_process
from PIL import Image

from spheroid_hpo.cli import main
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


def _finished(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
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


LATIN1_NAME = b"caf\xe9.png"  # not UTF-8: what a Latin-1 file share hands over


def test_train_keeps_a_file_whose_name_is_not_utf8_and_finds_it_again_through_the_manifest(
        tmp_path, monkeypatch, capsys):
    data = _two_class_folder(tmp_path / "data")
    os.rename(data / "a" / "img00.png", os.path.join(os.fsencode(data / "a"), LATIN1_NAME))
    manifest = tmp_path / "splits.csv"
    for out in ("t1", "t2"):  # the second run reads the manifest the first one wrote
        code, _, err = run_in_process(monkeypatch, capsys, "train", "--data", data, "--arch", "squeezenet1_1",
                                      "--epochs", "1", "--image-size", "32", "--batch-size", "4", "--device", "cpu",
                                      "--split-manifest", manifest, "--out", tmp_path / out)
        assert code == 0, err
        assert "could not be read" not in err and "no longer exists" not in err, err
    assert b"a/" + LATIN1_NAME + b"," in manifest.read_bytes()  # the name's own bytes, so it finds the file


def test_a_class_folder_whose_name_is_not_utf8_is_one_line(tmp_path, monkeypatch, capsys):
    data = _two_class_folder(tmp_path / "data")
    os.rename(data / "b", os.path.join(os.fsencode(data), b"c\xff"))
    code, _, err = run_in_process(monkeypatch, capsys, "train", "--data", data, "--arch", "squeezenet1_1", "--epochs",
                                  "1", "--image-size", "32", "--batch-size", "4", "--device", "cpu", "--out",
                                  tmp_path / "t")
    assert code == 2, err
    assert err.count("\n") == 1 and "b'c\\xff'" in err and "not valid UTF-8" in err and "rename" in err, err


def test_predict_writes_every_row_when_a_file_name_is_not_utf8(tmp_path, model_dir, monkeypatch, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (32, 32), color=90).save(images / "good.png")
    Image.new("L", (32, 32), color=90).save(os.path.join(os.fsencode(images), LATIN1_NAME))
    code, _, err = run_in_process(monkeypatch, capsys, "predict", images, "--model", model_dir, "--out",
                                  tmp_path / "p.csv")
    assert code == 0, err
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as handle:  # strict UTF-8, as pandas reads it
        rows = list(csv.DictReader(handle))
    assert sorted(Path(row["path"]).name for row in rows) == ["caf\\xe9.png", "good.png"]
    assert all(row["predicted_class"] in CLASSES and not row["error"] for row in rows)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A one-epoch run folder written by ``train``, on a data folder of its own. In this process: the
    tests that use it check other commands, and an interpreter start costs as much as the training."""
    folder = tmp_path_factory.mktemp("trained")
    data = _two_class_folder(folder / "data", per_class=8)
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(io.StringIO()), redirect_stderr(err):
        patch.setattr(sys, "argv", ["spheroid-hpo", "train", "--data", str(data), "--arch", "squeezenet1_1",
                                    "--epochs", "1", "--image-size", "32", "--batch-size", "4", "--device", "cpu",
                                    "--out", str(folder / "run")])
        with pytest.raises(SystemExit) as exit_info:
            main()
    assert exit_info.value.code in (0, None), err.getvalue()
    return folder / "run"


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A read-only tmpfs mount: root ignores permission bits, not a read-only file system."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


READ_ONLY_COMMANDS = {
    "train --out": ("train", "--data", "{data}", "--arch", "squeezenet1_1", "--epochs", "1", "--image-size", "32",
                    "--batch-size", "4", "--device", "cpu", "--out", "{ro}/run"),
    "demo-data": ("demo-data", "{ro}/demo", "--per-class", "3", "--size", "32"),
    "predict --out": ("predict", "{data}/a", "--model", "{run}", "--out", "{ro}/p.csv"),
    "export --out": ("export", "{run}", "--format", "torchscript", "--out", "{ro}/m.pt"),
}


@pytest.mark.parametrize("args", list(READ_ONLY_COMMANDS.values()), ids=list(READ_ONLY_COMMANDS))
def test_an_output_folder_on_a_read_only_file_system_is_one_line(args, read_only_dir, trained_run,
                                                                  monkeypatch, capsys):
    filled = [arg.format(ro=read_only_dir, run=trained_run, data=trained_run.parent / "data") for arg in args]
    code, _, err = run_in_process(monkeypatch, capsys, *filled)
    assert code == 2, err
    assert err.count("\n") == 1 and f"cannot write into {read_only_dir}" in err and "read-only" in err, err


def test_export_refuses_to_write_over_the_runs_own_model(trained_run, monkeypatch, capsys):
    before = (trained_run / "model.pt").read_bytes()
    code, _, err = run_in_process(monkeypatch, capsys, "export", trained_run, "--format", "torchscript", "--out",
                                  trained_run / "model.pt")
    assert code == 2, err
    assert err.count("\n") == 1 and "would overwrite a file of the run" in err, err
    assert (trained_run / "model.pt").read_bytes() == before


@pytest.mark.parametrize("text", ['{"config": ', "[1, 2]", '{"config": "x"}'], ids=["truncated", "list", "config"])
def test_a_malformed_metrics_json_is_one_line(text, trained_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes((trained_run / "model.pt").read_bytes())
    (run / "metrics.json").write_text(text)
    code, _, err = run_in_process(monkeypatch, capsys, "export", run, "--format", "torchscript")
    assert code == 2, err
    assert err.count("\n") == 1 and "metrics.json" in err, err


def test_a_run_folder_keeps_its_split_and_export_from_elsewhere_never_writes_the_data_folder(
        tmp_path, monkeypatch, capsys):
    """The run names its manifest by a relative path; the data folder's split is then deleted and the
    export runs from another working folder. It checks on the run's own split and writes nothing there."""
    work = tmp_path / "work"
    data = _two_class_folder(work / "data", per_class=8)
    monkeypatch.chdir(work)
    code, _, err = run_in_process(monkeypatch, capsys, "train", "--data", "data", "--arch", "squeezenet1_1", "--epochs",
                                  "1", "--image-size", "32", "--batch-size", "4", "--device", "cpu", "--split-manifest",
                                  "data/splits.csv", "--out", "run")
    assert code == 0, err
    run = work / "run"
    assert (run / "splits.csv").read_bytes() == (data / "splits.csv").read_bytes()
    (data / "splits.csv").unlink()
    before = sorted(path for path in data.rglob("*"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_in_process(monkeypatch, capsys, "export", run, "--format", "torchscript", "--out", "m.pt")
    assert code == 0, err
    assert "new split" not in err
    assert sorted(path for path in data.rglob("*")) == before
    assert (elsewhere / "m.pt").is_file()


CRAFTED_MODEL = {  # a key of model.pt set to a value no training writes, and the phrase that names it
    "temperature -1": ("temperature", -1.0, "temperature must be finite and above 0"),
    "temperature nan": ("temperature", float("nan"), "temperature must be finite and above 0"),
    "temperature 0": ("temperature", 0.0, "temperature must be finite and above 0"),
    "std 0": ("std", [0.0, 0.25, 0.25], "std must be three finite numbers above 0"),
    "mean nan": ("mean", [float("nan"), 0.5, 0.5], "mean must be three finite numbers"),
    "mean of length 1": ("mean", [0.5], "mean must be three finite numbers"),
    "class_names a string": ("class_names", "ab", "class_names must be a list"),
    "class_names repeated": ("class_names", ["a", "a"], "class_names repeat a name"),
}


@pytest.mark.parametrize("key, value, phrase", list(CRAFTED_MODEL.values()), ids=list(CRAFTED_MODEL))
def test_a_crafted_model_file_is_refused_in_one_line(key, value, phrase, model_dir, tmp_path, monkeypatch, capsys):
    payload = torch.load(model_dir / "model.pt", weights_only=True)
    payload[key] = value
    torch.save(payload, tmp_path / "model.pt")
    Image.new("L", (32, 32), color=90).save(tmp_path / "x.png")
    code, _, err = run_in_process(monkeypatch, capsys, "predict", tmp_path / "x.png", "--model", tmp_path / "model.pt",
                                  "--out", tmp_path / "p.csv")
    assert code == 2, err
    assert err.count("\n") == 1 and phrase in err, err
    assert not (tmp_path / "p.csv").exists()


@pytest.fixture(scope="module")
def onnx_file(model_dir, tmp_path_factory) -> Path:
    """model_dir's model exported to ONNX by the export code itself."""
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")  # CI installs it
    from spheroid_hpo.results.export._formats import export_onnx
    from spheroid_hpo.training.saved_model import load_model

    network, info = load_model(model_dir)
    out = tmp_path_factory.mktemp("onnx") / "m.onnx"
    export_onnx(network.eval(), info, out, check_images=torch.rand(4, 3, 32, 32))
    return out


def _with_metadata(onnx_path: Path, out: Path, rewrite) -> Path:
    import onnx

    model = onnx.load(str(onnx_path))
    for prop in model.metadata_props:
        if prop.key == "spheroid_hpo":
            prop.value = rewrite(prop.value)
    onnx.save(model, str(out))
    return out


CRAFTED_ONNX = {
    "metadata not JSON": (lambda text: "{not json", "malformed spheroid_hpo metadata"),
    "metadata lacks class_names": (lambda text: '{"architecture": "x"}', "malformed spheroid_hpo metadata"),
    "metadata has an extra key": (lambda text: text[:-1] + ', "extra": 1}', "malformed spheroid_hpo metadata"),
    "3 class names for 2 outputs": (lambda text: text.replace('["a", "b"]', '["a", "b", "c"]'),
                                    "names 3 classes but its outputs have"),
}


@pytest.mark.parametrize("rewrite, phrase", list(CRAFTED_ONNX.values()), ids=list(CRAFTED_ONNX))
def test_a_crafted_onnx_file_is_refused_in_one_line(rewrite, phrase, onnx_file, tmp_path, monkeypatch, capsys):
    crafted = _with_metadata(onnx_file, tmp_path / "c.onnx", rewrite)
    Image.new("L", (32, 32), color=90).save(tmp_path / "x.png")
    code, _, err = run_in_process(monkeypatch, capsys, "predict", tmp_path / "x.png", "--model", crafted, "--out",
                                  tmp_path / "p.csv")
    assert code == 2, err
    assert err.count("\n") == 1 and phrase in err, err
    assert not (tmp_path / "p.csv").exists()


def test_an_onnx_temperature_that_is_not_above_0_is_refused(onnx_file, tmp_path, monkeypatch, capsys):
    crafted = _with_metadata(onnx_file, tmp_path / "c.onnx",
                             lambda text: re.sub(r'"temperature": [^,}]+', '"temperature": -1.0', text))
    Image.new("L", (32, 32), color=90).save(tmp_path / "x.png")
    code, _, err = run_in_process(monkeypatch, capsys, "predict", tmp_path / "x.png", "--model", crafted, "--out",
                                  tmp_path / "p.csv")
    assert code == 2 and "temperature must be finite and above 0" in err, err


@pytest.mark.parametrize("how", ["best.toml", "--threads"])
def test_more_threads_than_cores_is_one_line(how, tmp_path, monkeypatch, capsys):
    """best.toml [machine] threads = 100000 reached torch.set_num_threads and ended in a segfault."""
    text = (ROOT / "studies" / "best.toml").read_text()
    huge = (os.cpu_count() or 1) + 1
    if how == "best.toml":
        text = re.sub(r"(?m)^threads = \d+", f"threads = {huge}", text)
    (tmp_path / "best.toml").write_text(text)
    extra = ("--threads", str(huge)) if how == "--threads" else ()
    # An empty data folder: refused before the data is read, as it must be, the check costs nothing; were
    # the thread count let through, the empty folder stops the run at once (not after 45 epochs x 5 seeds).
    (tmp_path / "empty").mkdir()
    code, _, err = run_in_process(monkeypatch, capsys, "reproduce", tmp_path / "best.toml", "--runs-dir",
                                  tmp_path / "runs", "--data", tmp_path / "empty", *extra)
    assert code == 2, err
    assert err.count("\n") == 1 and f"more than the {os.cpu_count()} CPU cores here" in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("host, everywhere", [
    ("0.0.0.0", True), ("::", True), ("", True), ("0", True), ("::ffff:0.0.0.0", True), ("0x0", True),
    ("127.0.0.1", False), ("::1", False), ("localhost", False), ("192.0.2.2", False),
])
def test_every_spelling_of_the_unspecified_address_gets_the_dashboard_warning(host, everywhere):
    """`dashboard --host 0` and `--host ::ffff:0.0.0.0` listened on the LAN without the warning
    (serve_dashboard warns, and shows a loopback address to open, exactly when this is true)."""
    from spheroid_hpo.tuning.dashboard import LOCALHOST, browser_url, on_every_interface

    assert on_every_interface(host) is everywhere
    assert (LOCALHOST in browser_url(host, 8080)) is (everywhere or host == LOCALHOST)


CONTENT_STUDY = """
[study]
name = "content"
architectures = ["squeezenet1_1"]
n_trials = 1

[search_space]
epochs = 1
lr = 1e-3
rotation = 10.0
batch_size = 4

[pruner]
name = "none"

[data]
path = "{data}"
image_size = 32
"""


def _tiff_folder(root: Path) -> Path:
    """Uncompressed 16-bit TIFF crops: every file of a class has the same size, as real exports do."""
    import numpy as np
    import tifffile

    rng = np.random.default_rng(1)
    for index, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(6):
            pixels = (rng.random((32, 32)) * 1000 + 500 * index).astype("uint16")
            tifffile.imwrite(root / name / f"s{i:02d}.tif", pixels)
    return root


def _swap_class_contents(data: Path) -> None:
    """Swap the bytes of the two classes' files: same names, same sizes, labels now wrong."""
    for i in range(6):
        first, second = data / "a" / f"s{i:02d}.tif", data / "b" / f"s{i:02d}.tif"
        a_bytes, b_bytes = first.read_bytes(), second.read_bytes()
        first.write_bytes(b_bytes)
        second.write_bytes(a_bytes)


def test_a_relaunch_on_data_whose_files_were_swapped_stops_in_one_line(tmp_path, monkeypatch, capsys):
    data = _tiff_folder(tmp_path / "data")
    study = tmp_path / "content.toml"
    study.write_text(CONTENT_STUDY.format(data=data))
    runs = tmp_path / "runs"
    code, _, err = run_in_process(monkeypatch, capsys, "create", "--study", study, "--runs-dir", runs)
    assert code == 0, err
    _swap_class_contents(data)
    code, _, err = run_in_process(monkeypatch, capsys, "create", "--study", study, "--runs-dir", runs)
    assert code == 2, err
    assert err.count("\n") == 1 and "created on other data" in err and "other bytes" in err, err


def test_loading_a_studys_data_refuses_files_swapped_between_classes(tmp_path):
    """What report, export --study and every worker load the recorded data through."""
    from spheroid_hpo.data import DataSource, SplitSpec, load_recorded_dataset, prepare_split
    from spheroid_hpo.errors import InputError

    data = _tiff_folder(tmp_path / "data")
    split = prepare_split(data, SplitSpec(manifest=tmp_path / "splits.csv"))
    source = DataSource(path=str(data), demo=None, image_size=32, fingerprint=split.fingerprint,
                        content=split.content)
    manifest_csv = (tmp_path / "splits.csv").read_text()

    def load():
        return load_recorded_dataset(source, owner="study content", manifest_csv=manifest_csv,
                                     manifest_path=tmp_path / "again.csv", data_dir=None, runs_dir=tmp_path,
                                     splits=("test",))

    assert len(load().test) > 0
    _swap_class_contents(data)
    with pytest.raises(InputError, match="other bytes"):
        load()
    old_record = DataSource.from_dict({**source.as_dict(), "content": None})  # a study from before the digest
    assert old_record.difference(split.fingerprint, "anything") is None


@pytest.mark.parametrize("lr", ["inf", "1e308", "nan"])
def test_a_learning_rate_that_is_not_finite_or_above_1_is_one_line(lr, tmp_path, monkeypatch, capsys):
    """--lr inf passed `lr > 0` and ended in a FloatingPointError traceback at the first epoch."""
    data = _two_class_folder(tmp_path / "data")
    code, _, err = run_in_process(monkeypatch, capsys, "train", "--data", data, "--arch", "squeezenet1_1", "--epochs",
                                  "1", "--image-size", "32", "--batch-size", "4", "--device", "cpu", "--lr", lr,
                                  "--out", tmp_path / "t")
    assert code == 2, err
    assert err.count("\n") == 1 and "lr must lie in (0.0, 1.0] (Adam's learning rate is positive)" in err, err
    assert not (data / "splits.csv").exists()  # refused before the data was split or decoded
