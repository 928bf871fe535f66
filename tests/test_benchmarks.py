"""Every benchmark script still runs: its --smoke mode, one tiny round, in this process.

The scripts are run by hand on a quiet machine, rarely; without this a refactor can break one
silently (benchmarks/pruning.py once stopped importing and nobody noticed for weeks). Each
smoke run goes through the script's real code path (data, training, the table it prints); only
the sizes are tiny, so what is asserted is that the table comes out, never a timing.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import optuna
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# script -> what its printed output must hold after a smoke run
EXPECTED = {
    "epoch_speed": r"squeezenet1_1 .* \d+\.\d\dx",
    "step_breakdown": r"squeezenet1_1",
    "precision": r"squeezenet1_1 +0\.0003 ",
    "allocator": r"glibc default .* 1\.00x",
    "worker_scaling": r"trials/hour",
    "pruning": r"epochs saved",
    "search_efficiency": r"random:none +\d+ +1\.00",
    "train_process": r"squeezenet1_1 .* \d+\.\d\dx",
    "duplicates": r"Planted copies found",
    "label_audit": r"precision \d\.\d{3} +recall \d\.\d{3}",
}


def test_every_script_has_a_smoke_run_here():
    scripts = {path.stem for path in BENCHMARKS.glob("*.py") if not path.stem.startswith("_")}
    assert scripts == set(EXPECTED)


def test_the_search_benchmark_measures_the_shipped_default_pair():
    """search_task.toml is a smaller copy of the quickstart task: its sampler and pruner must be the shipped ones."""
    from spheroid_hpo.tuning.study_file import load_study_config

    task = load_study_config(BENCHMARKS / "search_task.toml")
    shipped = load_study_config(BENCHMARKS.parent / "studies" / "quickstart.toml")
    assert (task.sampler, task.pruner) == (shipped.sampler, shipped.pruner)
    assert {s.name: s for s in task.search_space}["lr"] == {s.name: s for s in shipped.search_space}["lr"]


# These start child processes (workers, a script per pipeline, one per allocator setting: about
# 10 s each of interpreter start-ups) or time several 224 px variants even in smoke mode, so they
# run with the slow set, which CI runs; the default set keeps the three cheapest.
SLOW = {"pruning", "train_process", "allocator", "worker_scaling", "step_breakdown", "precision", "epoch_speed"}


@pytest.mark.parametrize("module_name", sorted(path.stem for path in BENCHMARKS.glob("_*.py")))
def test_each_helper_module_and_measurement_script_imports(module_name, monkeypatch):
    """The underscored files (shared helpers, and measurements behind a choice such as the audit's
    variants) run no smoke round; they must still import."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    assert importlib.import_module(module_name).__doc__


@pytest.mark.parametrize("script", sorted(SLOW))
def test_each_slow_smoke_script_imports_and_takes_its_smoke_options(script, monkeypatch):
    """The default set imports each script whose smoke round runs in the slow set, and parses its --smoke
    options: a moved name breaks the import (as it once did for pruning.py) here, not only in CI."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module(script)
    assert module._parse(["--smoke"]).smoke is True


@pytest.mark.parametrize("script", [
    pytest.param(script, marks=pytest.mark.slow) if script in SLOW else script
    for script in sorted(EXPECTED)
])
def test_the_benchmark_runs_one_tiny_round(script, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--smoke"])
    module = importlib.import_module(script)
    threads, verbosity = torch.get_num_threads(), optuna.logging.get_verbosity()
    try:
        module.main(["--smoke"])
    finally:
        # A script may set its own thread count and quiet Optuna; the tests after it keep theirs
        # (a launch's log must still hold Optuna's info lines).
        torch.set_num_threads(threads)
        optuna.logging.set_verbosity(verbosity)
    out = capsys.readouterr().out
    assert re.search(EXPECTED[script], out), out[-3000:]
