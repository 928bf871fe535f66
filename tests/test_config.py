"""Study files: the paper's Table II, the CPU study, and every way a file can be wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spheroid_hpo.errors import InputError
from spheroid_hpo.tuning.study_file import load_study_config, parse_study_text, with_overrides

STUDIES = Path(__file__).resolve().parents[1] / "studies"

VALID = """
[study]
name = "t"
architectures = ["squeezenet1_0"]

[search_space]
epochs = { low = 2, high = 4 }
lr = { low = 1e-4, high = 1e-2, log = true }
rotation = { low = 0.0, high = 20.0 }
batch_size = { low = 4, high = 8 }
"""


def parse(text: str):
    return parse_study_text(text, source=Path("test.toml"))


def test_paper_study_encodes_table_ii_exactly():
    config = load_study_config(STUDIES / "paper.toml")
    space = {spec.name: spec for spec in config.search_space}
    assert (space["epochs"].kind, space["epochs"].low, space["epochs"].high) == ("int", 55, 70)
    assert (space["lr"].kind, space["lr"].low, space["lr"].high, space["lr"].log) == ("float", 1e-6, 1e-3, True)
    assert (space["rotation"].low, space["rotation"].high) == (10.0, 25.0)
    assert (space["batch_size"].kind, space["batch_size"].low, space["batch_size"].high) == ("int", 5, 15)
    assert config.architectures == ("mobilenet_v3_large", "squeezenet1_0")
    assert config.metric == "val_macro_f1"
    # The paper's original configuration (Table II, "Original") is the enqueued baseline.
    assert dict(config.baseline) == {"epochs": 60, "lr": 1e-4, "rotation": 20.0, "batch_size": 10}
    assert config.sampler.name == "tpe" and config.sampler.seed == 0
    assert config.pruner.name == "hyperband"
    assert config.max_epochs == 70
    assert config.n_trials >= 1


def test_extended_study_adds_batchnorm_momentum():
    config = load_study_config(STUDIES / "extended.toml")
    space = {spec.name: spec for spec in config.search_space}
    assert space["bn_momentum"].log and space["bn_momentum"].low <= 0.01 < 0.1 <= space["bn_momentum"].high
    assert config.baseline["bn_momentum"] == 0.01  # torchvision's MobileNet V3 default


def test_quickstart_study_is_cpu_sized():
    config = load_study_config(STUDIES / "quickstart.toml")
    assert config.data.path is None  # the generated demo data
    assert config.data.image_size <= 64
    assert config.max_epochs <= 30
    assert config.n_trials <= 10
    # Whatever the machine, no trial starts after two minutes: the README promises about 4.
    assert config.timeout is not None and config.timeout <= 120
    # The paper's configuration runs first, as the paper trained it (tuning has to beat it).
    assert config.baseline["lr"] == 1e-4 and config.baseline["lr_schedule"] == "constant"


def test_command_line_overrides_the_study_file(tmp_path):
    config = with_overrides(parse(VALID), data=tmp_path, storage="sqlite:///x.db", n_trials=7, timeout=60)
    assert config.data.path == tmp_path
    assert config.storage == "sqlite:///x.db"
    assert config.n_trials == 7 and config.timeout == 60
    assert parse(VALID).n_trials == 20  # the default when the file names none


def test_fixed_values_are_allowed_in_the_search_space():
    config = parse(VALID.replace("batch_size = { low = 4, high = 8 }", "batch_size = 10"))
    spec = {s.name: s for s in config.search_space}["batch_size"]
    assert spec.kind == "fixed" and spec.value == 10


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("[study]", "[study]\nn_trails = 3"), ["n_trails", "n_trials"]),
        (("[search_space]", "[search_space]\nmomentum = 0.9"), ["momentum", "bn_momentum"]),
        (("epochs = { low = 2, high = 4 }", "epochs = { low = 9, high = 4 }"), ["search_space.epochs.low", "swap"]),
        (('architectures = ["squeezenet1_0"]', 'architectures = ["resnet50"]'),
         ["resnet50", "squeezenet1_0", "mobilenet_v3_large"]),
        (("[search_space]", '[pruner]\nname = "patient"\n\n[search_space]'),
         ["pruner.name", "patient", "hyperband", "median"]),
        (("[search_space]", '[sampler]\nname = "cmaes"\n\n[search_space]'), ["sampler.name", "tpe"]),
        (("lr = { low = 1e-4, high = 1e-2, log = true }", "lr = { low = 0.0, high = 1e-2, log = true }"),
         ["lr.low", "log"]),
        (("lr = { low = 1e-4, high = 1e-2, log = true }", 'lr = { low = "fast", high = 1e-2 }'),
         ["lr.low", "float", "fast"]),
        (("rotation = { low = 0.0, high = 20.0 }\n", ""), ["rotation"]),
        (("[search_space]", "[baseline]\nepochs = 99\n\n[search_space]"), ["baseline.epochs", "outside"]),
        (('name = "t"', 'name = "my study!"'), ["study.name", "my study!"]),
        (("[search_space]", "[data]\nfractions = [0.5, 0.5]\n\n[search_space]"), ["data.fractions", "sum"]),
    ],
)
def test_invalid_study_files_name_the_key_and_the_fix(change, expected):
    old, new = change
    text = VALID.replace(old, new, 1)
    assert text != VALID
    with pytest.raises(InputError) as error:
        parse(text)
    for fragment in expected:
        assert fragment in str(error.value)


def test_not_toml_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not valid TOML"):
        parse("[study\nname=")
    with pytest.raises(InputError, match="does not exist"):
        load_study_config(tmp_path / "nope.toml")


def test_cli_rejects_a_bad_study_file_before_any_work(tmp_path, monkeypatch, capsys):
    from spheroid_hpo.cli import main

    study = tmp_path / "bad.toml"
    study.write_text(VALID.replace("[study]", "[study]\nworkers = 4"))
    # Through the console-script entry point, in this process: an exception other than the exit
    # fails the test (no traceback can hide in the output).
    monkeypatch.setattr(sys, "argv", ["spheroid-hpo", "launch", "--study", str(study), "--runs-dir",
                                      str(tmp_path / "runs")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "study.workers is not a known key" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing was created: no data, no storage
