"""Each input rule is defined once: every reader of a value (a study file, a best.toml, a model.pt,
the library) refuses the same bad values, by the same limits, with one line naming the value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spheroid_hpo.data import assign_splits, validate_fractions, validate_image_size
from spheroid_hpo.data._folder import LabeledFile
from spheroid_hpo.data.demo import DEMO_LIMITS, validated_demo_settings
from spheroid_hpo.defaults import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from spheroid_hpo.errors import InputError
from spheroid_hpo.results.best_file import read_best_config
from spheroid_hpo.training import hyperparams
from spheroid_hpo.tuning.study_file import parse_study_text

BEST = Path(__file__).resolve().parents[1] / "studies" / "best.toml"
STUDY = """
[study]
name = "t"
architectures = ["squeezenet1_1"]

[search_space]
epochs = 1
lr = 1e-3
rotation = 0.0
batch_size = 4

[training]
precision = "auto"

[data]
image_size = 64
fractions = [0.6, 0.2, 0.2]

[data.demo]
per_class = 12
size = 32
seed = 0
"""


def study_with(key: str, value: str):
    """Parse STUDY with ``key = value`` in place of its first ``key = ...`` line."""
    text, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", STUDY, count=1, flags=re.M)
    assert count == 1, key
    return parse_study_text(text, source=Path("s.toml"))


def best_with(tmp_path: Path, key: str, value: str):
    """Read the committed best.toml with ``key = value`` in place of its first ``key = ...`` line."""
    text, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", BEST.read_text(), count=1, flags=re.M)
    assert count == 1, key
    path = tmp_path / "best.toml"
    path.write_text(text)
    return read_best_config(path)


def readers(tmp_path: Path) -> dict:
    return {"study file": study_with, "best.toml": lambda key, value: best_with(tmp_path, key, value)}


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------------- split fractions


@pytest.mark.parametrize("reader", ["study file", "best.toml"])
@pytest.mark.parametrize("fractions", ["[true, 0.5, 0.5]", "[0.5, 0.5, true]", '["0.7", 0.15, 0.15]',
                                       "[0.5, 0.5]", "[0.6, 0.3, 0.3]", "[0.0, 0.5, 0.5]", "[1.2, -0.1, -0.1]"])
def test_both_toml_readers_refuse_the_same_fractions_naming_the_value(tmp_path, reader, fractions):
    with pytest.raises(InputError) as error:
        readers(tmp_path)[reader]("fractions", fractions)
    assert (f"data.fractions must be three positive numbers (train, val, test) summing to 1, but got {fractions}"
            in one_line(error))


@pytest.mark.parametrize("reader", ["study file", "best.toml"])
def test_both_toml_readers_accept_good_fractions_as_floats(tmp_path, reader):
    config = readers(tmp_path)[reader]("fractions", "[0.5, 0.25, 0.25]")
    fractions = config.data.split.fractions if reader == "study file" else config.split.fractions
    assert fractions == (0.5, 0.25, 0.25) and all(type(f) is float for f in fractions)


def test_the_library_refuses_a_bool_among_the_fractions_too():
    files = [LabeledFile(f"{label}/{i}.png", label) for label in range(2) for i in range(10)]
    for fractions in ((True, 0.5, 0.5), ("0.7", 0.15, 0.15), "0.7"):
        with pytest.raises(InputError, match="are not numbers"):
            validate_fractions(fractions)
        with pytest.raises(InputError, match="are not numbers"):
            assign_splits(files, fractions=fractions, seed=0)


# --------------------------------------------------------------------------- image size


@pytest.mark.parametrize("reader", ["study file", "best.toml"])
@pytest.mark.parametrize("size", [MIN_IMAGE_SIZE - 1, MAX_IMAGE_SIZE + 1, 4000, 4096])
def test_both_toml_readers_bound_the_image_size_by_the_shared_limits(tmp_path, reader, size):
    with pytest.raises(InputError) as error:
        readers(tmp_path)[reader]("image_size", str(size))
    assert f"data.image_size must be from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, but got {size}" in one_line(error)


@pytest.mark.parametrize("reader", ["study file", "best.toml"])
def test_both_toml_readers_accept_the_largest_image_size(tmp_path, reader):
    config = readers(tmp_path)[reader]("image_size", str(MAX_IMAGE_SIZE))
    assert (config.data.image_size if reader == "study file" else config.image_size) == MAX_IMAGE_SIZE


@pytest.mark.parametrize("size", [4000, 4096, MAX_IMAGE_SIZE + 1, MIN_IMAGE_SIZE - 1])
def test_a_saved_model_outside_the_image_size_limits_is_refused_on_loading(tmp_path, size):
    from spheroid_hpo.training.models import create_model
    from spheroid_hpo.training.saved_model import ModelInfo, load_model, save_model

    info = ModelInfo(architecture="squeezenet1_1", class_names=("a", "b"), image_size=size,
                     mean=(0.5,) * 3, std=(0.25,) * 3)
    path = save_model(tmp_path / "model.pt", create_model("squeezenet1_1", num_classes=2), info)
    with pytest.raises(InputError) as error:
        load_model(path)
    message = one_line(error)
    assert str(path) in message and "re-export it" in message
    assert f"image size {size} is not a whole number of pixels from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}" in message
    with pytest.raises(InputError, match=f"image size {size} "):  # what predict would decode it at
        validate_image_size(size)


def test_a_saved_model_at_the_largest_image_size_loads(tmp_path):
    from spheroid_hpo.training.models import create_model
    from spheroid_hpo.training.saved_model import ModelInfo, load_model, save_model

    info = ModelInfo(architecture="squeezenet1_1", class_names=("a", "b"), image_size=MAX_IMAGE_SIZE,
                     mean=(0.5,) * 3, std=(0.25,) * 3)
    path = save_model(tmp_path / "model.pt", create_model("squeezenet1_1", num_classes=2), info)
    assert load_model(path)[1].image_size == MAX_IMAGE_SIZE


# --------------------------------------------------------------------------- demo data settings


@pytest.mark.parametrize("reader", ["study file", "best.toml"])
@pytest.mark.parametrize(("key", "value"), [("per_class", 2), ("per_class", 0), ("per_class", 5001),
                                            ("size", 8), ("size", 2000), ("seed", -1)])
def test_both_toml_readers_bound_the_demo_settings_like_the_generator(tmp_path, reader, key, value):
    minimum, maximum = DEMO_LIMITS[key]
    with pytest.raises(InputError) as error:
        readers(tmp_path)[reader](key, str(value))
    assert f"data.demo.{key} must be from {minimum} to {maximum}, but got {value}" in one_line(error)
    with pytest.raises(InputError, match=f"demo data {key}={value} is invalid; use an integer from {minimum} to "):
        validated_demo_settings(**{"per_class": 12, "size": 32, "seed": 0, key: value})


def test_the_demo_minimum_is_three_images_per_class_for_every_reader(tmp_path):
    assert DEMO_LIMITS["per_class"][0] == 3  # one image each for train, val and test
    assert study_with("per_class", "3").data.demo.per_class == 3
    assert best_with(tmp_path, "per_class", "3").demo["per_class"] == 3
    assert validated_demo_settings(per_class=3, size=16, seed=0)["per_class"] == 3


def test_a_best_file_needs_every_demo_setting(tmp_path):
    text = BEST.read_text().replace("\nseed = 0\n\n[machine]", "\n\n[machine]", 1)
    assert text != BEST.read_text()
    (tmp_path / "best.toml").write_text(text)
    with pytest.raises(InputError, match="data.demo.seed is missing"):
        read_best_config(tmp_path / "best.toml")


# --------------------------------------------------------------------------- precision, architecture, params


@pytest.mark.parametrize("reader", ["study file", "best.toml"])
def test_both_toml_readers_check_the_precision_against_the_same_list(tmp_path, reader):
    with pytest.raises(InputError) as error:
        readers(tmp_path)[reader]("precision", '"fp64"')
    assert "training.precision is 'fp64'; choose one of: auto, fp32, bf16, fp16" in one_line(error)


def test_a_best_file_names_the_registrys_architectures(tmp_path):
    from spheroid_hpo.training.architectures import architecture_names

    with pytest.raises(InputError) as error:
        best_with(tmp_path, "architecture", '"lenet"')
    assert f"best.architecture is 'lenet'; choose one of: {', '.join(architecture_names())}" in one_line(error)


def test_a_best_files_params_are_the_tunable_ones(tmp_path, monkeypatch):
    # A hyperparameter added to the one table is read from best.toml without another list to update.
    monkeypatch.setitem(hyperparams.TUNABLE_PARAMS, "warmup", int)
    monkeypatch.setitem(hyperparams.PARAM_BOUNDS, "warmup", (0, 10, False, "warmup epochs"))
    config = best_with(tmp_path, "batch_size", "4\nwarmup = 3")
    assert config.params["warmup"] == 3
    with pytest.raises(InputError, match=r"params.warmup must lie in \[0, 10\] \(warmup epochs\), but got warmup = 11"):
        best_with(tmp_path, "batch_size", "4\nwarmup = 11")


def test_a_best_file_needs_every_required_param(tmp_path):
    text = re.sub(r"^rotation = .*\n", "", BEST.read_text(), count=1, flags=re.M)
    (tmp_path / "best.toml").write_text(text)
    with pytest.raises(InputError, match="params.rotation is missing"):
        read_best_config(tmp_path / "best.toml")
