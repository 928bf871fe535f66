"""docker-compose.yml run for real, on the CPU: build, up, resume after down, a killed worker.

The deployment as users run it (docker-compose.yml with docker-compose.cpu.yml in place of the
GPU override), on a tiny study: 2 architectures x 2 trials of 2 epochs on 32 px generated data.
Everything is checked from the host, through the published PostgreSQL and dashboard ports.
Where Docker Hub cannot be reached, the base images are local stand-ins
(deploy/local-base-images.sh; .ci/run builds them).

Without Docker the test is skipped with one line naming the fix; with CI=true it fails instead.
It takes a few minutes (plus the first image build) and uses a compose project of its own,
removed with its volumes at the end.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from waiting import tail, wait_for

# Docker Engine, an image build and 6 to 8 minutes: the default run leaves it out, CI runs it.
pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ARCHITECTURES = ("squeezenet1_1", "squeezenet1_0")
N_TRIALS = 2
PREBUILD_ENV = "SPHEROID_HPO_DOCKER_PREBUILD"
KILL_EPOCHS = 20  # long enough to be killed mid-trial, after a few checkpoints (about 2.5 s each on 2 cores)

LIVE_STUDY = f"""
[study]
name = "live"
architectures = {json.dumps(list(ARCHITECTURES))}
n_trials = {N_TRIALS}

[search_space]
epochs = 2
lr = {{ low = 1e-4, high = 1e-3, log = true }}
rotation = 10.0
batch_size = 8

[pruner]
name = "none"

[data]
image_size = 32
"""

KILL_STUDY = f"""
[study]
name = "kill"
architectures = ["squeezenet1_1"]
n_trials = 1

[search_space]
epochs = {KILL_EPOCHS}
lr = 1e-3
rotation = 10.0
batch_size = 8

[pruner]
name = "none"

[data]
image_size = 32
"""


def docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed: `apt-get install -y docker.io docker-compose` (.ci/run does)"
    if compose_command() is None:
        chosen = os.environ.get("SPHEROID_HPO_COMPOSE")
        if chosen:
            return f"SPHEROID_HPO_COMPOSE={chosen!r} does not run (`{chosen} version` failed)"
        return "neither docker-compose nor `docker compose` is installed: `apt-get install -y docker-compose`"
    try:
        answered = subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        answered = False
    if not answered:
        return "the Docker daemon does not answer: start `dockerd` as root (.ci/run does)"
    return None


def compose_command() -> list[str] | None:
    """docker-compose (1.29, Debian's) when installed, else the `docker compose` plugin (v2);
    SPHEROID_HPO_COMPOSE="docker compose" (or "docker-compose") picks one."""
    chosen = os.environ.get("SPHEROID_HPO_COMPOSE", "").split()
    if chosen:
        try:
            return chosen if subprocess.run([*chosen, "version"], capture_output=True).returncode == 0 else None
        except OSError:
            return None
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.fixture(scope="module")
def docker_ready() -> None:
    problem = docker_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but {problem}")
    pytest.skip(problem)


def docker_time(text: str) -> datetime.datetime:
    """A time from `docker inspect` (RFC 3339, nanoseconds with trailing zeros cut)."""
    seconds, _, fraction = text.removesuffix("Z").partition(".")
    return datetime.datetime.fromisoformat(f"{seconds}.{(fraction or '0')[:6]:0<6}")


class Timings:
    """Seconds per phase, printed as they pass (shown by `pytest -s`, and in CI's log on failure)."""

    def __init__(self):
        self.last = time.monotonic()

    def lap(self, what: str) -> None:
        now = time.monotonic()
        print(f"compose live test: {what}: {now - self.last:.0f} s", flush=True)
        self.last = now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deployment:
    """One compose project of docker-compose.yml + docker-compose.cpu.yml, driven from the host."""

    def __init__(self, folder: Path):
        self.project = f"spheroidhpolive{os.getpid()}"
        self.password = secrets.token_urlsafe(24)
        self.postgres_port = free_port()
        self.dashboard_port = free_port()
        self.env_file = folder / "compose.env"
        self.studies = folder / "studies"
        self.data = folder / "data"
        self.compose = [
            *compose_command(), "--project-name", self.project, "--env-file", str(self.env_file),
            "-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "docker-compose.cpu.yml"),
        ]
        # Compose prefers the environment to the env file: leave none of its settings there.
        self.process_env = {k: v for k, v in os.environ.items() if k not in self.settings("x")}
        self.storage_url = (
            f"postgresql+psycopg://spheroid:{self.password}@127.0.0.1:{self.postgres_port}/spheroid"
        )

    def settings(self, study: str) -> dict[str, str]:
        return {
            "POSTGRES_PASSWORD": self.password, "DATA_DIR": str(self.data), "STUDY": study,
            "STUDIES_DIR": str(self.studies), "POSTGRES_PORT": str(self.postgres_port),
            "DASHBOARD_PORT": str(self.dashboard_port), "COMPOSE_PROJECT_NAME": self.project,
        }

    def use_study(self, study: str) -> None:
        settings = self.settings(study)
        self.env_file.touch(mode=0o600)  # it holds the password
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))

    def mask(self, text: str) -> str:
        return text.replace(self.password, "***")

    def run(self, *args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run(
                [*self.compose, *args], cwd=ROOT, env=self.process_env, capture_output=True, text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as error:
            raise AssertionError(
                f"`compose {' '.join(args)}` ran past {timeout:.0f} s; it had printed:\n"
                f"{self.mask(tail(error.output) + tail(error.stderr))}"
            ) from error
        if check and result.returncode != 0:
            raise AssertionError(
                f"`compose {' '.join(args)}` exited {result.returncode}:\n"
                f"{self.mask(result.stdout + result.stderr)[-4000:]}"
            )
        return result

    def logs(self) -> str:
        result = self.run("logs", "--no-color", "--tail", "40", timeout=120, check=False)
        return self.mask(result.stdout + result.stderr)[-12000:]

    def containers(self, service: str | None = None) -> list[dict]:
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = subprocess.run(["docker", "ps", "-aq", *filters], capture_output=True, text=True,
                             check=True).stdout.split()
        if not ids:
            return []
        return json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                                         check=True).stdout)

    def wait_exited(self, service: str, *, count: int, timeout: float) -> list[dict]:
        """Wait until ``count`` containers of ``service`` have exited for good; they must exit 0."""

        def exited():
            containers = self.containers(service)
            done = [c for c in containers if c["State"]["Status"] == "exited" and not c["State"]["Restarting"]]
            return done if len(containers) >= count and len(done) == len(containers) else None

        def explain() -> str:
            states = [(c["Name"], c["State"]["Status"], c["State"]["ExitCode"]) for c in self.containers(service)]
            return f"{service} containers (name, status, exit code): {states}\n{self.logs()}"

        done = wait_for(exited, timeout=timeout, what=f"{count} {service} container(s) to exit", interval=2,
                        explain=explain)
        codes = {c["Name"]: c["State"]["ExitCode"] for c in done}
        assert set(codes.values()) == {0}, f"{service} exit codes: {codes}"
        return done

    def up(self, *, timeout: float = 300) -> None:
        self.run("up", "-d", "--no-build", "--scale", "worker=2", timeout=timeout)

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage_url)


@pytest.fixture(scope="module")
def deployment(docker_ready, tmp_path_factory):
    folder = tmp_path_factory.mktemp("compose")
    deployment = Deployment(folder)
    deployment.studies.mkdir()
    (deployment.studies / "live.toml").write_text(LIVE_STUDY)
    (deployment.studies / "kill.toml").write_text(KILL_STUDY)
    subprocess.run(
        [sys.executable, "-m", "spheroid_hpo", "demo-data", str(deployment.data), "--per-class", "12",
         "--size", "32"], check=True, capture_output=True,
    )
    # The containers run as uid 1000: the mounted folders must be readable by anyone.
    for path in (folder, deployment.studies, deployment.data, *deployment.data.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    deployment.use_study("live")
    try:
        yield deployment
    finally:
        deployment.run("down", "-v", "--remove-orphans", timeout=300, check=False)
        left = deployment.containers()
        volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"name={deployment.project}_"],
                                 capture_output=True, text=True).stdout.split()
        assert not left and not volumes, f"`down -v` left containers {left} and volumes {volumes}"


def test_compose_deployment_runs_resumes_and_retries_a_killed_worker(deployment: Deployment):
    try:
        check_deployment(deployment)
    except Exception as error:  # noqa: BLE001 - every failure comes with the containers' logs
        what = str(error) if isinstance(error, AssertionError) else f"{error.__class__.__name__}: {error}"
        raise AssertionError(f"{deployment.mask(what)}\n\n--- compose logs ---\n{deployment.logs()}") from None


def wait_for_prebuild() -> None:
    """.ci/run builds the base images and this image in the background, beside the install and the
    first tests, and names a folder in SPHEROID_HPO_DOCKER_PREBUILD: wait for its exit status there.
    A failure ends the test with its log; the build below then finds every layer cached."""
    folder = os.environ.get(PREBUILD_ENV)
    if not folder:
        return
    status = Path(folder) / "rc"
    log = Path(folder) / "log"
    wait_for(status.exists, timeout=2400, what=f"the image build .ci/run started ({log})", interval=2,
             explain=lambda: tail(log.read_text(errors="replace") if log.exists() else None))
    if status.read_text().strip() != "0":
        log = (Path(folder) / "log").read_text(errors="replace")
        raise AssertionError(f"the image build .ci/run started failed ({status.read_text().strip()}):\n{log[-4000:]}")


def check_deployment(d: Deployment) -> None:
    timings = Timings()
    # 1. The image, from the repository's Dockerfile, as compose builds it.
    wait_for_prebuild()
    timings.lap("waiting for .ci/run's image build")
    d.run("build", timeout=1800)
    timings.lap("compose build")

    # 2.-3. up: create runs once and exits 0, then the workers spend the budget and exit 0.
    d.up()
    d.wait_exited("create", count=1, timeout=300)
    workers = d.wait_exited("worker", count=2, timeout=900)
    timings.lap("first up until the workers exited")
    (create,) = d.containers("create")
    for worker in workers:
        assert docker_time(worker["State"]["StartedAt"]) >= docker_time(create["State"]["FinishedAt"]), (
            "a worker started before create had finished")

    # 4. Through the published PostgreSQL port: every trial finished, none RUNNING, budget met.
    finished = {}
    for architecture in ARCHITECTURES:
        trials = d.study(f"live.{architecture}").get_trials()
        states = [t.state for t in trials]
        assert TrialState.RUNNING not in states, (architecture, states)
        assert states == [TrialState.COMPLETE] * N_TRIALS, (architecture, states)
        assert {t.user_attrs["device"] for t in trials} == {"cpu"}
        finished[architecture] = {(t.number, t.datetime_start, t.value) for t in trials}
    hosts = {t.user_attrs["host"] for a in ARCHITECTURES for t in d.study(f"live.{a}").trials}
    worker_hosts = {w["Config"]["Hostname"] for w in workers}
    assert hosts <= worker_hosts, (hosts, worker_hosts)

    # 5. The published dashboard lists the study and serves a trial's image from the shared volume.
    check_dashboard(d)

    # 6. The password is on no container's command line and nowhere in the database.
    check_password_is_hidden(d)
    timings.lap("trials, dashboard and password checks")

    # 7. down (volumes kept) and up again: create reopens, workers find the budget spent.
    d.run("down", timeout=300)
    assert not d.containers()
    d.up()
    d.wait_exited("create", count=1, timeout=300)
    d.wait_exited("worker", count=2, timeout=300)
    for architecture in ARCHITECTURES:
        trials = d.study(f"live.{architecture}").get_trials()
        assert {(t.number, t.datetime_start, t.value) for t in trials} == finished[architecture], (
            f"{architecture}: trials changed after down/up: {[(t.number, t.state) for t in trials]}"
        )
    worker_output = d.run("logs", "--no-color", "worker", timeout=120).stdout
    assert worker_output.count("ran 0 trials") == 2, worker_output[-3000:]
    timings.lap("down and up again")

    # Fault: `docker kill` of the replica running a trial; the other one retries it, resuming
    # from the checkpoint the killed one left on the shared volume.
    check_killed_worker(d, timings)
    timings.lap("the killed worker's trial retried")


def check_dashboard(d: Deployment) -> None:
    root = f"http://127.0.0.1:{d.dashboard_port}"

    def listing():
        try:
            with urllib.request.urlopen(f"{root}/api/studies", timeout=10) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    listed = wait_for(listing, timeout=120, what=f"{root}/api/studies", interval=1, explain=d.logs)["study_summaries"]
    names = {s["study_name"] for s in listed}
    assert {f"live.{a}" for a in ARCHITECTURES} <= names, names
    study = d.study(f"live.{ARCHITECTURES[0]}")
    trial = study.trials[0]
    artifacts = {meta.filename: meta for meta in get_all_artifact_meta(trial, storage=study._storage)}
    assert "confusion.png" in artifacts, sorted(artifacts)
    url = f"{root}/artifacts/{study._study_id}/{trial._trial_id}/{artifacts['confusion.png'].artifact_id}"
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"] == "image/png", response.headers["Content-Type"]
        assert response.read().startswith(PNG_MAGIC)


def check_password_is_hidden(d: Deployment) -> None:
    containers = d.containers()
    assert {c["Config"]["Labels"]["com.docker.compose.service"] for c in containers} == {
        "postgres", "create", "worker", "dashboard"}
    for container in containers:
        command = json.dumps([container["Path"], container["Args"], container["Config"]["Cmd"],
                              container["Config"]["Entrypoint"]])
        # Plain `if`s, not asserts: pytest would print the operands, the password among them.
        if d.password in command:
            raise AssertionError(f"the password is on the command line of {container['Name']}")
        if container["State"]["Running"]:
            processes = subprocess.run(["docker", "top", container["Id"], "-eo", "pid,args"],
                                       capture_output=True, text=True, check=True).stdout
            assert "postgres" in processes or "spheroid-hpo" in processes, processes
            if d.password in processes:
                raise AssertionError(f"the password is on a process command line in {container['Name']}")
    # PostgreSQL asks network clients for the password (the stand-in image as the official one).
    wrong = sqlalchemy.create_engine(d.storage_url.replace(d.password, "not-" + d.password[::-1]))
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError, match="password authentication failed"):
            wrong.connect().close()
    finally:
        wrong.dispose()
    engine = sqlalchemy.create_engine(d.storage_url)
    try:
        with engine.connect() as connection:
            tables = sqlalchemy.inspect(connection).get_table_names()
            assert "trial_user_attributes" in tables, tables
            rows = 0
            for table in tables:
                for row in connection.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')):
                    rows += 1
                    if d.password in repr(tuple(row)):
                        raise AssertionError(f"the password is in table {table}")
            assert rows > 50, rows  # the study's attributes, trials, params and values were read
    finally:
        engine.dispose()


def check_killed_worker(d: Deployment, timings: Timings) -> None:
    d.use_study("kill")
    d.up()
    d.wait_exited("create", count=1, timeout=300)
    name = "kill.squeezenet1_1"

    def running_after_epochs():
        try:
            trials = d.study(name).get_trials(deepcopy=False)
        except KeyError:
            return None
        running = [t for t in trials if t.state == TrialState.RUNNING and len(t.intermediate_values) >= 3]
        return running[0] if running else None

    victim = wait_for(running_after_epochs, timeout=300, what="a running trial with 3 epochs", interval=0.5,
                      explain=d.logs)
    host = victim.user_attrs["host"]
    (container,) = [c for c in d.containers("worker") if c["Config"]["Hostname"] == host]
    subprocess.run(["docker", "kill", container["Id"]], check=True, capture_output=True)
    timings.lap(f"kill study: up until a trial ran {len(victim.intermediate_values)} epochs, then docker kill")
    killed = d.study(name).trials[0]
    assert killed.state == TrialState.RUNNING  # until its heartbeat goes stale (a minute)
    epochs_before_kill = len(killed.intermediate_values)
    assert epochs_before_kill < KILL_EPOCHS

    def retried():
        trials = d.study(name).get_trials(deepcopy=False)
        return trials if [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE] else None

    trials = wait_for(retried, timeout=600, what="the killed trial to fail and its retry to complete", interval=2,
                      explain=lambda: f"trials: {[(t.number, t.state.name) for t in d.study(name).trials]}\n{d.logs()}")
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.params == killed.params
    assert retry.user_attrs["host"] != host, "the killed replica itself ran the retry"
    assert retry.user_attrs["host"] in {c["Config"]["Hostname"] for c in d.containers("worker")}
    # It went on from the killed trial's last checkpoint on the shared volume, not from epoch 0.
    restored = retry.user_attrs["epochs_restored"]
    assert restored >= epochs_before_kill - 1 >= 2, (
        f"the retry restored {restored} epochs from the checkpoint; the killed trial had reported {epochs_before_kill}")
    assert sorted(retry.intermediate_values) == list(range(1, KILL_EPOCHS + 1))
    killed_state = [c["State"] for c in d.containers("worker") if c["Id"] == container["Id"]][0]
    assert killed_state["ExitCode"] == 137 and not killed_state["Running"], killed_state
