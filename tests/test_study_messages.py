"""What users meet around a study: metric names on the dashboard's axes, Optuna's log lines off the terminal."""

from __future__ import annotations

import logging

import optuna

from spheroid_hpo.tuning.launch import optuna_messages_to
from spheroid_hpo.tuning.records import METRIC_NAME


def test_optuna_info_lines_go_to_the_log_file_not_the_terminal(tmp_path, capfd):
    optuna.logging.set_verbosity(logging.INFO)
    log = tmp_path / "launch.log"
    with optuna_messages_to(log):
        optuna.create_study(study_name="quiet")
    assert "A new study created" not in capfd.readouterr().err
    assert "A new study created in memory with name: quiet" in log.read_text()
    optuna.create_study(study_name="loud")  # afterwards Optuna talks to the terminal again
    assert "A new study created" in capfd.readouterr().err


def test_launched_studies_name_their_metric(finished_study):
    storage = optuna.storages.RDBStorage(finished_study.storage_url)
    names = optuna.get_all_study_names(storage)
    assert names
    for name in names:
        assert optuna.load_study(study_name=name, storage=storage).metric_names == [METRIC_NAME]
    assert METRIC_NAME == "val_macro_f1"
    launch_log = finished_study.runs_dir / "tiny" / "logs" / "launch.log"
    assert "A new study created" in launch_log.read_text()
