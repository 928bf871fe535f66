"""docker-compose.yml and its Dockerfile, checked without Docker.

Without Docker (tests/test_compose_live.py runs it for real): the compose file is read as YAML,
its variables are filled in from .env.example the way ``docker compose`` fills
them from .env, and every service command is parsed by the real ``spheroid-hpo``
command line (no command is run).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import sqlalchemy
import typer
import yaml
from packaging.requirements import Requirement

from spheroid_hpo.cli import app
from spheroid_hpo.tuning.study_file import load_study_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
GPU_OVERRIDE = yaml.safe_load((ROOT / "docker-compose.override.yml").read_text())
CPU_OVERRIDE = yaml.safe_load((ROOT / "docker-compose.cpu.yml").read_text())
APP_SERVICES = ("create", "worker", "dashboard")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME; $$ is a literal $.
VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<braced>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>\w+))"
)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


ENV = read_env_file(ROOT / ".env.example")


def interpolate(value, env: dict[str, str]):
    """Fill in compose variables the way ``docker compose`` does; unset required ones fail."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def fill(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op in (":?", "?"):
            raise AssertionError(f"compose needs {name} ({arg}), which .env.example does not set")
        return arg if op in (":-", "-") else ""

    return VARIABLE.sub(fill, value)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_TEXT)


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return interpolate(raw, ENV)


def parse_cli(args: list[str]) -> tuple[str, dict]:
    """Parse ``spheroid-hpo ARGS`` with the real command line; return the command and its values."""
    group = typer.main.get_command(app)
    context = group.make_context("spheroid-hpo", list(args), resilient_parsing=False)
    command = group.get_command(context, args[0])
    assert command is not None, f"spheroid-hpo has no command {args[0]!r}"
    with command.make_context(args[0], list(args[1:]), parent=context, resilient_parsing=False) as sub:
        return args[0], sub.params


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_every_service_command_is_a_valid_spheroid_hpo_invocation(compose):
    services = compose["services"]
    assert set(services) == {"postgres", *APP_SERVICES}
    for name in APP_SERVICES:
        command = services[name]["command"]
        assert command[0] == "spheroid-hpo", name
        subcommand, params = parse_cli(command[1:])
        assert subcommand == name
        # Every service talks to the compose network's PostgreSQL, by the same URL.
        assert params["storage"] == "postgresql+psycopg://spheroid@postgres:5432/spheroid"
        assert sqlalchemy.engine.make_url(params["storage"]).get_dialect().driver == "psycopg"
    assert parse_cli(services["worker"]["command"][1:])[1]["device"] == "cuda"


def test_create_uses_a_study_file_of_the_image_whose_name_workers_join(compose):
    services = compose["services"]
    study_file = option(services["create"]["command"], "--study")
    config = load_study_config(ROOT / study_file)  # /app/studies is the repository's studies/
    assert option(services["worker"]["command"], "--study") == config.name
    assert option(services["dashboard"]["command"], "--study") == config.name


def test_no_secret_is_written_in_the_compose_file(raw, compose):
    assert ENV["POSTGRES_PASSWORD"] not in COMPOSE_TEXT
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|SECRET|TOKEN", key):
                # A reference with no default: a default would be a password in this file.
                assert re.fullmatch(r"\$\{POSTGRES_PASSWORD(:\?[^}]*)?\}", value), (name, key, value)
    for name in APP_SERVICES:
        url = option(compose["services"][name]["command"], "--storage")
        assert sqlalchemy.engine.make_url(url).password is None  # libpq reads PGPASSWORD instead
        assert compose["services"][name]["environment"]["PGPASSWORD"] == ENV["POSTGRES_PASSWORD"]


def test_env_file_stays_out_of_git_and_the_image():
    ignored = subprocess.run(["git", "check-ignore", "--quiet", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env must be listed in .gitignore"
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_only_the_loopback_interface_publishes_ports(compose):
    published = {name: service.get("ports", []) for name, service in compose["services"].items()}
    assert published["dashboard"], "the dashboard must be reachable on the server"
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_data_is_mounted_read_only_and_artifacts_on_a_shared_volume(raw, compose):
    for name in APP_SERVICES:
        volumes = compose["services"][name]["volumes"]
        data = [v for v in volumes if v.split(":")[1] == "/data"]
        assert data and data[0].split(":")[0] == ENV["DATA_DIR"] and data[0].endswith(":ro"), name
        shared = [v for v in volumes if v.split(":")[1] == "/shared"]
        assert shared and shared[0].split(":")[0] in raw["volumes"], name  # a named volume
    for name in ("worker", "dashboard"):
        assert option(compose["services"][name]["command"], "--artifacts").startswith("/shared/")


def test_worker_reserves_a_gpu_and_scales(compose):
    # docker-compose.override.yml, read with docker-compose.yml when no -f is given.
    assert set(GPU_OVERRIDE["services"]) == {"worker"}
    devices = interpolate(GPU_OVERRIDE, ENV)["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    worker = compose["services"]["worker"]
    assert "deploy" not in worker  # an override could not take it away again (docker-compose 1.x merges)
    assert "container_name" not in worker  # a fixed name would forbid --scale worker=N
    assert not worker.get("ports")  # published ports would collide between replicas


def test_workers_start_after_create_succeeded_on_a_healthy_database(raw, compose):
    services = compose["services"]
    assert services["postgres"]["healthcheck"]["test"]
    assert services["postgres"]["volumes"][0].split(":")[0] in raw["volumes"]
    for name in ("worker", "dashboard"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["create"]["condition"] == "service_completed_successfully"
    assert services["create"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_dockerfile_pins_torch_versions_that_pyproject_admits():
    dockerfile = (ROOT / "Dockerfile").read_text()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    admitted = {Requirement(text).name: Requirement(text).specifier for text in dependencies}
    for package in ("torch", "torchvision"):
        pins = re.findall(rf"\b{package}==([\w.]+)", dockerfile)
        assert len(pins) == 1, package
        assert pins[0] in admitted[package], (package, pins[0], str(admitted[package]))
    assert re.search(r"^RUN pip install \.$", dockerfile, re.MULTILINE)  # the package itself, with its deps


def test_interpolation_follows_compose_rules():
    """The helper the checks above rely on."""
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${SET:-d}-${EMPTY:-d}-${EMPTY-d}-${UNSET-d}-$$SET-$SET", env) == "x-x-d--d-$SET-x"
    with pytest.raises(AssertionError, match="UNSET"):
        interpolate("${UNSET:?set it}", env)


def test_cpu_variant_runs_the_same_workers_on_the_cpu_without_a_gpu(compose):
    """docker-compose.cpu.yml, named with -f in place of the GPU override."""
    assert set(CPU_OVERRIDE["services"]) == {"worker"}
    cpu_worker = interpolate(CPU_OVERRIDE, ENV)["services"]["worker"]
    assert set(cpu_worker) == {"command"}  # no device reservation, nothing else changed
    gpu_command = compose["services"]["worker"]["command"]
    assert parse_cli(cpu_worker["command"][1:])[1]["device"] == "cpu"
    assert cpu_worker["command"] == [("cpu" if arg == "cuda" else arg) for arg in gpu_command]


def test_compose_files_fit_docker_compose_1():
    """Debian's docker-compose 1.29 rejects a top-level `name:`; the project name comes from .env."""
    for path in ("docker-compose.yml", "docker-compose.override.yml", "docker-compose.cpu.yml"):
        assert set(yaml.safe_load((ROOT / path).read_text())) <= {"services", "volumes", "x-app"}, path
    assert ENV["COMPOSE_PROJECT_NAME"] == "spheroid-hpo"
