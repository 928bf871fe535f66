"""Wrong storage URLs through the real command line: one line naming the masked URL, exit code 2.

Each case runs ``spheroid-hpo`` as a subprocess, the way a user meets it. The
PostgreSQL cases talk to the real test server. That server trusts local
connections, so a wrong password would still connect; the credentials case uses
a role that does not exist, which the server refuses at login just the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy
from conftest import POSTGRES_URL, write_tiny_study

PASSWORD = "s3cret-Pw9"
_SERVER = sqlalchemy.engine.make_url(POSTGRES_URL)
HOST, PORT, DB = _SERVER.host or "127.0.0.1", _SERVER.port or 5432, _SERVER.database or "postgres"
SPHEROID_HPO = str(Path(sys.executable).with_name("spheroid-hpo"))

# Wrong users and passwords against the real PostgreSQL server, each in a fresh interpreter that
# imports torch: the default run leaves them out, CI runs them.
pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Case:
    url: str
    shown: str  # how the URL must appear in the message
    secrets: tuple[str, ...] = (PASSWORD,)


CASES = {
    "server down": Case(
        f"postgresql+psycopg://postgres:{PASSWORD}@{HOST}:1/{DB}",
        f"postgresql+psycopg://postgres:***@{HOST}:1/{DB}",
    ),
    "unknown user": Case(
        f"postgresql+psycopg://spheroid_no_such_role:{PASSWORD}@{HOST}:{PORT}/{DB}",
        f"postgresql+psycopg://spheroid_no_such_role:***@{HOST}:{PORT}/{DB}",
    ),
    "unknown driver": Case(
        f"postgresql+nodriver://postgres:{PASSWORD}@{HOST}:{PORT}/{DB}",
        f"postgresql+nodriver://postgres:***@{HOST}:{PORT}/{DB}",
    ),
    "garbage": Case(  # no "://": nothing parses, the password must still be hidden
        f"postgresql+psycopg//postgres:{PASSWORD}@{HOST}:{PORT}/{DB}",
        f"postgresql+psycopg//postgres:***@{HOST}:{PORT}/{DB}",
    ),
    "port not a number": Case(
        f"postgresql+psycopg://postgres:{PASSWORD}@{HOST}:port/{DB}",
        f"postgresql+psycopg://postgres:***@{HOST}:port/{DB}",
    ),
    # An unencoded '@' splits the password: neither half may show.
    "unencoded @ in the password": Case(
        f"postgresql+psycopg://postgres:{PASSWORD}@Qz7@{HOST}:{PORT}/{DB}",
        f"postgresql+psycopg://postgres:***@{HOST}:{PORT}/{DB}",
        secrets=(PASSWORD, "Qz7"),
    ),
}

# The commands that create studies answer the same way; one case each is enough
# (every fresh interpreter imports torch, so the cases are kept few).
OTHER_COMMANDS = ("create", "launch")


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stderr: str


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[tuple[str, str], Outcome]:
    """Run every (command, case) at once: each is a fresh interpreter importing torch."""
    folder = tmp_path_factory.mktemp("storage_errors")
    study_file = write_tiny_study(folder, name="storage_errors")
    runs_dir = folder / "runs"

    def args(command: str, url: str) -> list[str]:
        if command == "worker":
            return ["worker", "--storage", url, "--study", "storage_errors", "--runs-dir", str(runs_dir)]
        return [command, "--study", str(study_file), "--storage", url, "--runs-dir", str(runs_dir)]

    runs = [("worker", name) for name in CASES] + [(command, "server down") for command in OTHER_COMMANDS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(key: tuple[str, str]) -> Outcome:
        command, name = key
        done = subprocess.run(
            [SPHEROID_HPO, *args(command, CASES[name].url)], capture_output=True, text=True, timeout=120,
            cwd=folder, env=env,
        )
        return Outcome(done.returncode, done.stderr)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(runs, pool.map(run, runs)))


def _check(outcome: Outcome, case: Case) -> None:
    assert outcome.returncode == 2, outcome.stderr
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("error: ")
    assert case.shown in lines[0]
    assert "Traceback" not in outcome.stderr
    for secret in case.secrets:
        assert secret not in outcome.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_worker_reports_a_wrong_storage_url_in_one_masked_line(outcomes, name):
    _check(outcomes[("worker", name)], CASES[name])


@pytest.mark.parametrize("command", OTHER_COMMANDS)
def test_every_command_reports_an_unreachable_server_the_same_way(outcomes, command):
    _check(outcomes[(command, "server down")], CASES["server down"])


def test_messages_say_what_went_wrong(outcomes):
    """Each message names the cause, so the user knows what to fix."""
    expected = {
        "server down": "Connection refused",
        "unknown user": 'role "spheroid_no_such_role" does not exist',
        "unknown driver": "not installed or unknown",
        "garbage": "is not a database URL",
        "port not a number": "is not a database URL",
        "unencoded @ in the password": "%40",
    }
    for name, fragment in expected.items():
        assert fragment in outcomes[("worker", name)].stderr, name
