"""The test suite's own promises: the default run leaves the heavy tests out and says how to run
them, the mutation check runs the tests an entry names whatever their markers, and a child
process that times out fails with what it printed."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import check_mutations
import pytest
from waiting import wait_for

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("slow", "docker", "browser", "postgres", "slurm")


def _project_pytest_settings(pytester) -> None:
    """The pyproject's [tool.pytest.ini_options] and this folder's conftest, in the pytester folder."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    # JSON strings and lists are TOML too.
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n" + "".join(
        f"{key} = {json.dumps(settings[key])}\n" for key in ("addopts", "markers")
    ))


def _marked_tests(pytester) -> None:
    pytester.makepyfile(test_kinds="import pytest\n\ndef test_light():\n    pass\n" + "".join(
        f"\n@pytest.mark.{name}\ndef test_{name}():\n    pass\n" for name in HEAVY
    ))


def test_the_default_run_leaves_every_heavy_marker_out_and_names_the_command_for_them(pytester):
    _project_pytest_settings(pytester)
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    _marked_tests(pytester)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, deselected=len(HEAVY))
    result.stdout.fnmatch_lines([f"*5 heavy tests left out; CI runs them too: pytest -m '{' or '.join(HEAVY)}'*"])
    # The README's command for the heavy ones runs exactly those; -m "" runs everything.
    pytester.runpytest("-m", " or ".join(HEAVY)).assert_outcomes(passed=len(HEAVY), deselected=1)
    pytester.runpytest("-m", "").assert_outcomes(passed=1 + len(HEAVY))


@pytest.mark.parametrize("runner", ["fresh interpreter", "fork server"])
def test_the_mutation_check_runs_named_heavy_tests_too(pytester, runner):
    """Deselected by the default marker expression, a named test would not run, and its breakage would
    count as caught; in a fork server's child as in a fresh interpreter."""
    _project_pytest_settings(pytester)
    server = check_mutations.ForkServer(pytester.path, preload=()) if runner == "fork server" else None
    try:
        pytester.makepyfile(test_heavy="import pytest\n\n@pytest.mark.slow\ndef test_fails():\n    assert False\n")
        passed, output = check_mutations.run_tests(pytester.path, ("test_heavy.py::test_fails",), server)
        assert not passed and "1 failed" in output, output
        pytester.makepyfile(test_heavy="import pytest\n\n@pytest.mark.slow\ndef test_passes():\n    pass\n")
        passed, output = check_mutations.run_tests(pytester.path, ("test_heavy.py::test_passes",), server)
        assert passed and "1 passed" in output, output
    finally:
        if server is not None:
            server.close()


def test_a_fork_servers_child_imports_the_broken_file_afresh_and_each_verdict_is_told(pytester, capsys):
    """The server imports third-party modules once; the module an entry breaks is imported by each
    child from the file as it is then, so a breakage is caught (KILLED), a harmless change survives
    (SURVIVED), and an entry naming no test is an error, never a breakage caught."""
    _project_pytest_settings(pytester)
    pytester.makepyfile(
        shapes="def area(width, height):\n    return width * height\n",
        test_shapes="from shapes import area\n\ndef test_area():\n    assert area(2, 3) == 6\n",
    )
    unbroken = (pytester.path / "shapes.py").read_text()
    server = check_mutations.ForkServer(pytester.path, preload=())
    try:
        def check(name, broken, tests=("test_shapes.py::test_area",)):
            entry = check_mutations.Mutation(name=name, file="shapes.py", tests=tests,
                                             original="    return width * height", broken=broken)
            return check_mutations.check_entry(entry, pytester.path, server=server)

        assert check("area-adds", "    return width + height") is True
        assert check("area-commutes", "    return height * width") is False
        assert check("area-adds-untested", "    return width + height", ("test_shapes.py::test_volume",)) is False
        assert check("area-adds-again", "    return width + height") is True  # restored after each
    finally:
        server.close()
    lines = capsys.readouterr().out.splitlines()
    verdicts = [" ".join(line.split()[:2]) for line in lines if line.startswith(("KILLED", "SURVIVED", "ERROR"))]
    assert verdicts == ["KILLED area-adds", "SURVIVED area-commutes", "ERROR area-adds-untested:",
                        "KILLED area-adds-again"], lines
    assert (pytester.path / "shapes.py").read_text() == unbroken


def test_the_mutation_check_ends_with_its_slowest_entries_and_their_seconds():
    summary = check_mutations.slowest_summary({"quick": 1.5, "slowest": 30.0, "middle": 4.5}, shown=2)
    assert summary.splitlines() == [
        "slowest 2 of 3 entries (36 s in all):", "    30.0 s  slowest", "     4.5 s  middle",
    ]


def test_a_child_process_that_times_out_fails_with_what_it_printed(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    # A shell prints at once (a Python child could still be starting after the timeout on a busy
    # machine); `exec` lets the kill on timeout reach the sleep, which holds the output pipe.
    pytester.makepyfile(test_child="""
        import subprocess

        def test_child():
            code = "echo 'reached step 2 of 3'; exec sleep 60"
            subprocess.run(["sh", "-c", code], capture_output=True, text=True, timeout=1)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*timed out after 1 s*", "*--- stdout*", "reached step 2 of 3"])


def test_a_wait_that_times_out_says_what_it_waited_for_what_it_saw_and_the_logs():
    seen = iter(range(1000))
    with pytest.raises(AssertionError) as caught:
        wait_for(lambda: 0, timeout=0.2, interval=0.05, what="two epochs",
                 explain=lambda: "--- worker-0.log\nepoch 1 of 40")
    message = str(caught.value)
    assert "timed out after 0.2 s waiting for two epochs; last saw 0" in message
    assert "epoch 1 of 40" in message
    assert wait_for(lambda: next(seen) >= 3 and "ready", timeout=5, interval=0.01, what="x") == "ready"
