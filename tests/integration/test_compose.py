"""docker-compose.yml and the Dockerfile, checked without a container engine.

No container runs here: the compose file is validated by a real compose implementation (Debian's
``docker-compose``, installed by ``make test``), whose resolved configuration (anchors merged,
variables interpolated) is then checked for the structure allot relies on. The Dockerfile is
checked against the repository: what it copies exists and is what the package needs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
APP_SERVICES = {"migrate", "worker", "beat", "flower"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH", re.IGNORECASE)
INTERPOLATION = re.compile(r"^\$\{[A-Z_]+(:?[-?][^}]*)?\}$")


def compose(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f docker-compose.yml ARGS`` with only ``variables`` from the caller."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed: `make test` installs it "
            "(apt-get install docker-compose)",
            pytrace=False,
        )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ALLOT_", "FLOWER_", "POSTGRES_", "COMPOSE_", "DOCKER_"))
    }
    return subprocess.run(
        [binary, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args],
        env=env | variables,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def resolved(**variables: str) -> dict[str, Any]:
    """The configuration as compose understands it (``docker-compose config``)."""
    result = compose("config", FLOWER_BASIC_AUTH="admin:s3cret", **variables)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The resolved configuration with the required variable set and nothing else."""
    return resolved()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_compose_validates_the_file() -> None:
    result = compose("config", "-q", FLOWER_BASIC_AUTH="admin:s3cret")
    assert result.returncode == 0, result.stderr


def test_flower_credentials_are_required() -> None:
    result = compose("config", "-q")
    assert result.returncode != 0
    assert "set FLOWER_BASIC_AUTH=user:password" in result.stderr


def test_services_start_in_order_once_their_dependencies_are_healthy(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    assert set(services) == {"zookeeper", "redis", "postgres", "prometheus"} | APP_SERVICES
    assert services["zookeeper"]["image"] == "zookeeper:3.8"
    assert services["redis"]["image"] == "redis:7"
    assert services["postgres"]["image"] == "postgres:15"
    for name in APP_SERVICES:
        assert services[name]["build"]["context"] == str(ROOT), name
        assert services[name]["image"] == "allot:local", name

    for name in ("zookeeper", "redis", "postgres", "worker", "flower"):
        assert services[name]["healthcheck"]["test"], name

    def waits_for(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    assert waits_for("migrate") == {"postgres": "service_healthy"}
    migrated = {"migrate": "service_completed_successfully"}
    servers = {"zookeeper": "service_healthy", "redis": "service_healthy"}
    assert waits_for("worker") == migrated | servers
    assert waits_for("beat") == migrated | servers
    assert waits_for("flower") == migrated | {"redis": "service_healthy"}
    assert services["migrate"]["command"] == ["allot", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"


def test_workers_scale_with_a_node_key_per_container(config: dict[str, Any]) -> None:
    worker = config["services"]["worker"]
    # no fixed name or host port, which `--scale worker=N` would make collide
    assert "container_name" not in worker
    assert "ports" not in worker
    command = worker["command"]
    assert command[:4] == ["celery", "-A", "tasks", "worker"]
    assert command[command.index("-n") + 1] == "worker@%h"  # %h: the container's hostname
    assert "ALLOT_NODE_KEY" not in worker["environment"]
    assert "--destination worker@$$HOSTNAME" in " ".join(worker["healthcheck"]["test"])


def test_flower_is_published_on_loopback_only_and_keeps_its_history(
    config: dict[str, Any],
) -> None:
    flower = config["services"]["flower"]
    assert flower["ports"] in (["127.0.0.1:5555:5555/tcp"], ["127.0.0.1:5555:5555"])
    for name, service in config["services"].items():
        if name not in ("flower", "prometheus"):
            assert "ports" not in service, f"{name} must not be published"
    assert flower["command"] == ["celery", "-A", "tasks", "flower", "--conf=/app/flowerconfig.py"]
    environment = flower["environment"]
    assert environment["FLOWER_BASIC_AUTH"] == "admin:s3cret"
    assert environment["FLOWER_ADDRESS"] == "0.0.0.0"  # inside its container; see ports
    volume, _, target = flower["volumes"][0].partition(":")
    assert volume == "flower-data"
    assert environment["FLOWER_DB"].startswith(target.split(":")[0] + "/")
    assert "flower-data" in config["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in " ".join(
        config["services"]["postgres"]["volumes"]
    )


def test_allot_is_configured_only_through_the_environment() -> None:
    services = resolved(ALLOT_ASSIGN_INTERVAL="7", POSTGRES_PASSWORD="pw")["services"]
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        assert environment["ALLOT_ZK_HOSTS"] == "zookeeper:2181", name
        assert environment["ALLOT_BROKER_URL"] == "redis://redis:6379/0", name
        assert environment["ALLOT_DATABASE_URL"] == "postgresql://allot:pw@postgres:5432/allot"
        assert environment["ALLOT_ASSIGN_INTERVAL"] == "7", name
        assert not [v for v in services[name].get("volumes", []) if v.startswith(("/", "."))]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw"


def test_the_file_holds_no_secret_of_its_own() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert INTERPOLATION.match(str(value)), f"{name}: {key} must come from a variable"
            for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", str(value)):
                assert INTERPOLATION.match(password), f"{name}: {key} has a literal password"
    flower_auth = raw["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert flower_auth.startswith("${FLOWER_BASIC_AUTH:?"), "no default credentials for Flower"


def test_dockerfile_copies_what_the_package_needs_and_nothing_missing() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    installs = " ".join(a for k, a in instructions if k == "RUN")
    assert not re.search(r"jre|jdk|java", installs), "the app image needs no Java"

    copied: list[str] = []
    for keyword, arguments in instructions:
        if keyword == "COPY":
            *sources, _destination = arguments.split()
            copied.extend(s for s in sources if not s.startswith("--"))
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"

    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not ignored & set(copied), "the Dockerfile copies what .dockerignore leaves out"

    # every package pyproject.toml installs, and what it reads at build time
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied"
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= set(copied)
    assert any(k == "RUN" and "pip install ." in a for k, a in instructions)


def test_the_commands_compose_runs_exist_in_the_image(config: dict[str, Any]) -> None:
    instructions = dockerfile_instructions()
    workdir = next(a for k, a in instructions if k == "WORKDIR")
    copied_to_workdir = {
        source
        for k, a in instructions
        if k == "COPY" and a.split()[-1] in ("./", ".", workdir, workdir + "/")
        for source in a.split()[:-1]
    }
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = set(pyproject["project"]["scripts"])
    dependencies = " ".join(pyproject["project"]["dependencies"])

    for name, service in config["services"].items():
        if name not in APP_SERVICES:
            continue
        command = service["command"]
        if command[0] == "celery":
            assert "celery" in dependencies
            assert command[1:3] == ["-A", "tasks"]
        else:
            assert command[0] in scripts, f"{name}: {command[0]} is not an installed script"
        for argument in command:
            if argument.startswith("--conf="):
                path = Path(argument.removeprefix("--conf="))
                assert str(path.parent) == workdir
                assert path.name in copied_to_workdir
    assert any(k == "USER" and a != "root" for k, a in instructions)


def test_prometheus_scrapes_every_worker_on_its_metrics_port(config: dict[str, Any]) -> None:
    prometheus = config["services"]["prometheus"]
    assert prometheus["ports"] in (["127.0.0.1:9090:9090/tcp"], ["127.0.0.1:9090:9090"])
    mount = next(v for v in prometheus["volumes"] if ":/etc/prometheus/allot" in v)
    assert Path(mount.split(":")[0]).resolve() == ROOT / "ops" / "prometheus"
    config_file = prometheus["command"][0].removeprefix("--config.file=/etc/prometheus/allot/")
    scrape = yaml.safe_load((ROOT / "ops" / "prometheus" / config_file).read_text())
    (job,) = scrape["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    # the DNS name of the scaled service, on the port every worker serves its metrics on
    assert discovery["names"] == ["worker"]
    worker = config["services"]["worker"]
    assert str(discovery["port"]) == worker["environment"]["ALLOT_METRICS_PORT"]
    multiproc = worker["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert any(str(t).startswith(multiproc) for t in worker["tmpfs"]), "fresh at every start"
    assert (ROOT / "ops" / "prometheus" / scrape["rule_files"][0]).exists()
