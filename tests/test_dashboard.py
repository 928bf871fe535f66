"""The dashboard end to end: the real ``spheroid-hpo dashboard`` process, viewed in a real headless Chromium."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from playwright.sync_api import expect, sync_playwright

from spheroid_hpo.errors import InputError
from spheroid_hpo.tuning.dashboard import serve_dashboard

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
# Generous: two cores are shared by several test sessions, and the server imports torch before it listens.
START_TIMEOUT_S = 300
PAGE_TIMEOUT_MS = 60_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def require_chromium() -> None:
    """Skip (outside CI) or fail (CI=true) with one line naming the install command when the browser is absent."""
    if Path(CHROMIUM).is_file():
        return
    message = f"no browser at {CHROMIUM}: install Debian's with `apt-get install -y chromium` (.ci/run does)"
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


class RunningDashboard:
    """A ``spheroid-hpo dashboard`` process whose output lines are collected as they come."""

    def __init__(self, *args: str, cwd: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spheroid_hpo", "dashboard", "--port", "0", *args], cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, lines, echo), daemon=True)
            for stream, lines, echo in ((self.process.stdout, self.stdout, True),
                                        (self.process.stderr, self.stderr, False))
        ]
        for reader in self._readers:
            reader.start()

    def _collect(self, stream, lines: list[str], echo: bool) -> None:
        for line in stream:
            lines.append(line)
            if echo:
                self._lines.put(line)
        if echo:
            self._lines.put(None)

    def wait_for_url(self) -> str:
        """The URL the server prints once it listens."""
        while True:
            try:
                line = self._lines.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                raise AssertionError(f"no URL within {START_TIMEOUT_S} s: {self.output()}") from None
            if line is None:
                raise AssertionError(f"dashboard exited with {self.process.wait()}: {self.output()}")
            match = re.search(r"open (http://\S+/dashboard)", line)
            if match:
                return match.group(1)

    def stop(self) -> int:
        """SIGTERM, as a service manager or Ctrl-C would stop it; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)


@contextlib.contextmanager
def running_dashboard(*args: str, cwd: Path):
    dashboard = RunningDashboard(*args, cwd=cwd)
    try:
        yield dashboard
    finally:
        dashboard.stop()


def trial_with_figures(storage_url: str, study_name: str) -> tuple[optuna.Study, optuna.trial.FrozenTrial, dict]:
    """A completed trial of ``study_name`` and its artifacts by file name."""
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        artifacts = {meta.filename: meta for meta in get_all_artifact_meta(trial, storage=study._storage)}
        if "curves.png" in artifacts:
            return study, trial, artifacts
    raise AssertionError(f"no completed trial with curves.png in {study_name}")


def artifact_path(study: optuna.Study, trial: optuna.trial.FrozenTrial, artifact_id: str) -> str:
    """optuna-dashboard's route for one trial artifact, served from the artifact store."""
    return f"/artifacts/{study._study_id}/{trial._trial_id}/{artifact_id}"


@pytest.mark.browser
def test_dashboard_shows_studies_trials_and_figures_in_chromium(finished_study, tmp_path):
    study, trial, artifacts = trial_with_figures(finished_study.storage_url, f"{finished_study.name}.resnet18")
    curves = artifact_path(study, trial, artifacts["curves.png"].artifact_id)
    screenshot = tmp_path / "trial.png"
    require_chromium()
    # Run where `launch` ran, so --study alone finds runs/tiny/study.db and runs/tiny/artifacts.
    with running_dashboard("--study", finished_study.name, cwd=finished_study.runs_dir.parent) as dashboard:
        url = dashboard.wait_for_url()
        assert url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1300})
                page.set_default_timeout(PAGE_TIMEOUT_MS)

                page.goto(url)
                for architecture in ("squeezenet1_1", "resnet18"):
                    expect(page.get_by_text(f"{finished_study.name}.{architecture}")).to_be_visible(
                        timeout=PAGE_TIMEOUT_MS
                    )

                page.goto(f"{url}/studies/{study._study_id}/trials?numbers={trial.number}")
                expect(page.get_by_text(f"Trial {trial.number} (trial_id={trial._trial_id})")).to_be_visible(
                    timeout=PAGE_TIMEOUT_MS
                )
                image = page.locator(f'img[src="{curves}"]')
                image.scroll_into_view_if_needed()
                expect(image).to_be_visible(timeout=PAGE_TIMEOUT_MS)
                # The PNG came through the artifact store and decoded, not a broken-image icon.
                page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
                assert image.evaluate("img => img.naturalWidth") > 0
                page.screenshot(path=screenshot)
            finally:
                browser.close()
        assert dashboard.stop() == 0
    assert "dashboard stopped" in dashboard.output()
    assert "listens on every network interface" not in "".join(dashboard.stderr)
    assert screenshot.read_bytes().startswith(PNG_MAGIC)
    assert screenshot.stat().st_size > 20_000


def test_dashboard_on_every_interface_warns_and_serves_the_artifact_store(finished_study, tmp_path):
    study, trial, artifacts = trial_with_figures(finished_study.storage_url, f"{finished_study.name}.squeezenet1_1")
    with running_dashboard(
        "--storage", finished_study.storage_url, "--artifacts", str(finished_study.artifact_dir),
        "--host", "0.0.0.0", cwd=tmp_path,
    ) as dashboard:
        url = dashboard.wait_for_url()
        root = url.removesuffix("/dashboard")
        with urllib.request.urlopen(f"{root}/api/studies", timeout=60) as response:
            listing = response.read().decode()
        confusion = artifact_path(study, trial, artifacts["confusion.png"].artifact_id)
        with urllib.request.urlopen(root + confusion, timeout=60) as response:
            assert response.headers["Content-Type"] == "image/png"
            assert response.read().startswith(PNG_MAGIC)
        assert dashboard.stop() == 0
    assert url.startswith("http://127.0.0.1:")  # what to open on this machine
    assert f"{finished_study.name}.squeezenet1_1" in listing and f"{finished_study.name}.resnet18" in listing
    assert "listens on every network interface" in "".join(dashboard.stderr)


def test_a_missing_study_is_one_clear_error_and_creates_nothing(tmp_path):
    with pytest.raises(InputError, match="pass --storage URL or --study NAME"):
        serve_dashboard(runs_dir=tmp_path / "runs")
    with pytest.raises(InputError, match=r"no study storage at sqlite:///.*nosuch.*launch the study first"):
        serve_dashboard(study="nosuch", runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_wrong_study_name_lists_the_studies_in_the_storage(finished_study):
    with pytest.raises(InputError, match=r"no study 'tinny'.*it holds: tiny"):
        serve_dashboard(storage_url=finished_study.storage_url, study="tinny")


def test_a_busy_port_is_one_clear_error(finished_study):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=rf"cannot listen on 127.0.0.1:{port}: .*--port"):
            serve_dashboard(
                storage_url=finished_study.storage_url, artifact_dir=finished_study.artifact_dir, port=port,
            )


def test_dashboard_serves_each_trials_intermediate_values_and_the_parameter_importances(finished_study, tmp_path):
    """The data behind the intermediate-values and importance pages, as the browser fetches it."""
    import json
    import sqlite3

    # A copy of the finished study, plus a study whose value depends on lr alone, so importances are defined.
    copy = tmp_path / "study.db"
    with sqlite3.connect(finished_study.storage_url.removeprefix("sqlite:///")) as source, \
            sqlite3.connect(copy) as target:
        source.backup(target)
    url = f"sqlite:///{copy}"
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    rotation = optuna.distributions.FloatDistribution(0.0, 20.0)
    synthetic = optuna.create_study(study_name="importance-demo", storage=url, direction="maximize")
    for index in range(8):
        params = {"lr": 10 ** (-4 + index / 4), "rotation": float((index * 7) % 20)}
        synthetic.add_trial(optuna.trial.create_trial(
            params=params, distributions={"lr": lr, "rotation": rotation}, value=0.1 * index,
            intermediate_values={1: 0.05 * index, 2: 0.1 * index},
        ))
    tuned = optuna.load_study(study_name=f"{finished_study.name}.resnet18", storage=url)

    with running_dashboard("--storage", url, "--artifacts", str(finished_study.artifact_dir),
                           cwd=tmp_path) as dashboard:
        root = dashboard.wait_for_url().removesuffix("/dashboard")

        def get(path: str) -> dict:
            with urllib.request.urlopen(root + path, timeout=60) as response:
                return json.loads(response.read())

        served = {t["number"]: t for t in get(f"/api/studies/{tuned._study_id}")["trials"]}
        importances = get(f"/api/studies/{synthetic._study_id}/param_importances")["param_importances"][0]
        assert dashboard.stop() == 0

    assert sorted(served) == [t.number for t in tuned.trials]
    for trial in tuned.trials:
        values = {v["step"]: v["value"] for v in served[trial.number]["intermediate_values"]}
        assert values == trial.intermediate_values and values  # the per-epoch validation macro-F1
        assert sorted(values) == list(range(1, trial.user_attrs["epochs_trained"] + 1))
    by_name = {item["name"]: item["importance"] for item in importances}
    assert set(by_name) == {"lr", "rotation"} and by_name["lr"] > by_name["rotation"]
