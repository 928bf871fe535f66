"""How `launch`, `create` and `worker` pass their options on: devices, threads, timeout, grouping.

The worker processes `launch` would start are recorded instead of run, so these
tests check what the launcher decided without training anything.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from split_manifests import GROUP_BY
from study_files import one_architecture_study
from typer.testing import CliRunner

from spheroid_hpo.cli import app
from spheroid_hpo.errors import InputError
from spheroid_hpo.tuning import launch as launch_module
from spheroid_hpo.tuning import worker as worker_module
from spheroid_hpo.tuning.launch import threads_per_worker, worker_devices
from spheroid_hpo.tuning.records import MANIFEST as MANIFEST_ATTR


class RecordedWorker:
    """Stands in for a worker process: it has already exited with code 0."""

    stdout = None  # no output to copy into its log

    def __init__(self, command, *, env, **_):
        self.command, self.env, self.returncode = command, env, 0

    def poll(self):
        return 0

    def wait(self, timeout=None):
        return 0

    def option(self, name: str) -> str:
        return self.command[self.command.index(name) + 1]


def grouped_study(folder: Path, name: str) -> Path:
    text = one_architecture_study(name=name)
    path = folder / f"{name}.toml"
    path.write_text(text.replace("[data]\n", f"[data]\ngroup_by = '{GROUP_BY}'\n"))
    return path


def assert_grouped(manifest_csv: str) -> None:
    """Every file carries its group from the study's regex, and no group spans two splits."""
    rows = list(csv.DictReader(io.StringIO(manifest_csv)))
    assert rows and all(row["group"] == re.search(GROUP_BY, row["path"]).group(1) for row in rows)
    splits: dict[str, set[str]] = {}
    for row in rows:
        splits.setdefault(row["group"], set()).add(row["split"])
    assert all(len(found) == 1 for found in splits.values()), splits


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def test_worker_devices_spread_over_the_given_gpus_or_stay_on_the_cpu(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 3)
    assert worker_devices(5, [0, 2]) == ["cuda:0", "cuda:2", "cuda:0", "cuda:2", "cuda:0"]
    with pytest.raises(InputError, match=r"^--gpus names GPU 3, but this machine has 3 CUDA GPU\(s\), indexes 0 to 2"):
        worker_devices(2, [0, 3])
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert worker_devices(2, None) == ["cpu", "cpu"]
    with pytest.raises(InputError, match="but this machine has no CUDA GPU"):  # issue 26: the launch started
        worker_devices(1, [3])
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 3)
    assert worker_devices(4, None) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]


def test_threads_per_worker_split_the_cores():
    assert threads_per_worker(3, cpu_count=8) == 2
    assert threads_per_worker(1, cpu_count=8) == 8
    assert threads_per_worker(4, cpu_count=2) == 1


def test_launch_starts_each_worker_with_its_gpu_threads_timeout_and_the_grouped_split(tmp_path, monkeypatch):
    started: list[RecordedWorker] = []
    monkeypatch.setattr(launch_module.subprocess, "Popen", lambda command, **kw: started.append(
        RecordedWorker(command, **kw)) or started[-1])
    monkeypatch.setattr(launch_module.os, "cpu_count", lambda: 8)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    study = grouped_study(tmp_path, "wired")
    runs = tmp_path / "runs"

    # GPUs named out of order: left out, --gpus would mean all of them from 0 up.
    invoke("launch", "--workers", "3", "--gpus", "1,0", "--timeout", "45", "--study", str(study),
           "--runs-dir", str(runs))

    assert [w.option("--device") for w in started] == ["cuda:1", "cuda:0", "cuda:1"]
    assert [w.option("--worker-index") for w in started] == ["0", "1", "2"]
    assert {w.option("--threads") for w in started} == {"2"}  # 8 cores / 3 workers
    assert {w.env["OMP_NUM_THREADS"] for w in started} == {"2"}
    assert {float(w.option("--timeout")) for w in started} == {45.0}
    assert_grouped((runs / "wired" / "splits.csv").read_text())


def test_create_splits_by_the_study_files_group_pattern(tmp_path):
    import optuna

    study = grouped_study(tmp_path, "grouped")
    url = f"sqlite:///{tmp_path / 'grouped.db'}"
    invoke("create", "--study", str(study), "--storage", url, "--runs-dir", str(tmp_path / "runs"))
    recorded = optuna.load_study(study_name="grouped.squeezenet1_1", storage=url).user_attrs[MANIFEST_ATTR]
    assert_grouped(recorded)


def test_the_worker_command_passes_its_options_on(monkeypatch, tmp_path):
    received = {}
    monkeypatch.setattr(worker_module, "run_worker", lambda **kwargs: received.update(kwargs) or
                        worker_module.WorkerSummary(trials_run=0, seconds=0.0))
    invoke("worker", "--storage", "sqlite:///x.db", "--study", "s", "--device", "cuda:1", "--threads", "3",
           "--timeout", "90", "--worker-index", "7", "--heartbeat-interval", "5", "--runs-dir", str(tmp_path))
    assert (received["device"], received["threads"], received["timeout"]) == ("cuda:1", 3, 90.0)
    assert (received["worker_index"], received["heartbeat_interval"]) == (7, 5)
    assert received["storage_url"] == "sqlite:///x.db" and received["study"] == "s"


def _render(progress) -> str:
    from rich.console import Console

    from spheroid_hpo.tuning.launch import progress_table

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(progress_table(progress, title="study s"))
    return console.export_text()


def test_the_progress_table_counts_trials_and_names_each_best_trial_with_its_params():
    from spheroid_hpo.tuning.progress import ArchitectureProgress

    row = dict(budget=8, complete=3, pruned=2, failed=1, running=1, waiting=0, best_trial=4,
               compute_seconds=60.0, images_per_second=350.0)
    text = _render([
        ArchitectureProgress(architecture="mobilenet_v3_large", best_value=0.8766,
                             best_params={"lr": 1e-3, "batch_size": 10}, **row),
        ArchitectureProgress(architecture="squeezenet1_1", best_value=0.5, best_params={}, **row),
    ])
    assert re.search(r"mobilenet_v3_large\s+6/8\s+3\s+2\s+1\s+1\s+350\s+0\.877", text)
    assert re.search(r"best mobilenet_v3_large: trial #4, val macro-F1 0\.877, .*lr=1\.0e-03.*batch_size=10", text)
    # Every value fixed by the study file: no params, and no dangling comma.
    assert re.search(r"best squeezenet1_1: trial #4, val macro-F1 0\.500$", text, re.MULTILINE)


def test_the_launch_summary_keeps_an_error_on_one_line_in_a_log(tmp_path, capsys, monkeypatch):
    """Piped to a log (capsys is no terminal), a line longer than 80 columns is not wrapped."""
    from spheroid_hpo.tuning.launch import LaunchSummary, print_launch_summary
    from spheroid_hpo.tuning.progress import ArchitectureProgress

    monkeypatch.delenv("COLUMNS", raising=False)
    log_dir = tmp_path / ("a-temp-folder-with-a-long-name-" * 4) / "logs"
    reason = ("CheckpointMismatch: checkpoint trial-0.pt belongs to another run ({'study': 'another'}), not to "
              "{'study': 'hopeless'}; delete it or use another checkpoint folder")
    failed = ArchitectureProgress(architecture="squeezenet1_1", budget=1, complete=0, pruned=0, failed=1, running=0,
                                  waiting=0, best_value=None, best_params={}, best_trial=None, compute_seconds=1.0,
                                  images_per_second=None, fail_reason=reason)
    summary = LaunchSummary(study_name="hopeless", storage_url="sqlite:///study.db", artifact_dir=tmp_path,
                            log_dir=log_dir, progress=[failed], worker_exit_codes=[0],
                            worker_logs=[log_dir / "worker-0.log"], worker_errors=[None], interrupted=False,
                            seconds=1.0)
    assert print_launch_summary(summary) == 1
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "every trial of squeezenet1_1" in line]
    assert reason in line and f"{log_dir}/" in line
