"""docker-compose.yaml's structure: the services, healthchecks, volumes and executor settings.

No Docker engine runs here, so this checks the file itself (after resolving YAML anchors),
lets the Compose tool validate it, and checks it against scripts/airflow_celery.py, which runs
the same components with the same settings on one machine (and is started by the tests).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.airflow_celery import (
    COMPOSE_ONLY,
    COMPOSE_ONLY_SETTINGS,
    COMPOSE_SERVICES,
    SITE_KEYS,
    CeleryDeployment,
    Postgres,
    Redis,
    common_settings,
)
from tests.dags.airflow_env import REPO

COMPOSE = REPO / "docker-compose.yaml"
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
LONG_RUNNING = (*AIRFLOW_SERVICES, "postgres", "redis", "sandbox-engine")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _services(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def test_every_component_is_a_service(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name in (*LONG_RUNNING, "airflow-init", "sandbox-image"):
        assert name in services, f"docker-compose.yaml has no service {name!r}"
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
        "airflow-worker": "celery worker",
    }


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert check.get("interval") and check.get("retries"), name
    assert "/api/v2/version" in " ".join(services["airflow-apiserver"]["healthcheck"]["test"])


def test_celery_executor_with_postgres_and_redis(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
        # The driver is named: SQLAlchemy 2.1 would pick psycopg 3, which is not installed.
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
        # One JWT secret for every component, or workers cannot talk to the execution API.
        assert (
            env["AIRFLOW__API_AUTH__JWT_SECRET"]
            == "${AIRFLOW_JWT_SECRET:?set AIRFLOW_JWT_SECRET in .env}"
        )
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/ise/dags"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(
            "http://airflow-apiserver:"
        )
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"


def test_images_and_project_mount(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        build = services[name]["build"]
        assert build["dockerfile"] == "docker/airflow.Dockerfile"
        assert (REPO / build["dockerfile"]).is_file()
        assert ".:/opt/ise" in services[name]["volumes"], name
    dockerfile = (REPO / "docker/airflow.Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM apache/airflow:3\.", dockerfile, re.MULTILINE)
    assert "pip install --no-cache-dir --no-deps -e ." in dockerfile


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, service in _services(compose).items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source!r}"
    assert {"postgres-db", "sandbox-certs", "sandbox-storage"} <= declared


def test_workers_scale_and_never_get_the_host_docker_socket(compose: dict[str, Any]) -> None:
    services = _services(compose)
    worker = services["airflow-worker"]
    # --scale needs replicas that do not collide on a name or a host port.
    assert "container_name" not in worker
    assert "ports" not in worker
    for name, service in services.items():
        for volume in service.get("volumes", []):
            assert "docker.sock" not in volume, f"{name} mounts a Docker socket: {volume}"
    env = worker["environment"]
    assert env["DOCKER_HOST"] == "tcp://sandbox-engine:2376"
    assert env["DOCKER_TLS_VERIFY"] == "1"
    assert "sandbox-certs:/certs:ro" in worker["volumes"]
    assert worker["depends_on"]["sandbox-image"]["condition"] == "service_completed_successfully"
    # The engine is reachable only inside the compose network, never on a host port.
    engine = services["sandbox-engine"]
    assert engine["image"].startswith("docker:") and "dind" in engine["image"]
    assert "ports" not in engine
    # Only workers run episodes, so only they get the engine.
    for name in AIRFLOW_SERVICES:
        if name != "airflow-worker":
            assert "DOCKER_HOST" not in services[name]["environment"], name


def test_ui_is_published_on_loopback_only(compose: dict[str, Any]) -> None:
    ports = _services(compose)["airflow-apiserver"]["ports"]
    assert ports and all(str(port).startswith("127.0.0.1:") for port in ports)
    for name, service in _services(compose).items():
        if name != "airflow-apiserver":
            assert "ports" not in service, f"{name} publishes a host port"


def test_init_creates_the_llm_pool_from_params(compose: dict[str, Any]) -> None:
    script = "\n".join(_services(compose)["airflow-init"]["command"])
    assert "airflow db migrate" in script
    assert "airflow pools set" in script
    assert "airflow.pool" in script or ".pool," in script


def test_compose_file_is_described_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Deployment", 1)
    assert len(section) == 2, "README has no Deployment section"
    text = section[1]
    assert "docker compose" in text
    assert "could not be started" in text or "not been started" in text
    assert "make airflow" in text


# --- in step with scripts/airflow_celery.py (the same deployment on one machine) ------------


def _script_environment(tmp_path: Path) -> dict[str, str]:
    """The environment the script gives every component (services not started)."""
    deployment = CeleryDeployment(tmp_path, workers=2)
    deployment.postgres = Postgres(tmp_path / "pg", 5432, "pw")
    deployment.redis = Redis(tmp_path / "redis", 6379)
    return deployment.environment()


def test_compose_runs_the_scripts_components_with_its_commands(compose: dict[str, Any]) -> None:
    services = _services(compose)
    assert set(services) == set(COMPOSE_SERVICES) | set(COMPOSE_ONLY)
    for name, command in COMPOSE_SERVICES.items():
        assert services[name]["command"] == command, name
    # The script starts every one of them, workers with their own concurrency and name.
    commands = CeleryDeployment(Path("/nonexistent"), workers=2, concurrency=3).commands()
    started = {" ".join(argv[:2]) if argv[0] == "celery" else argv[0] for argv in commands.values()}
    assert started == set(COMPOSE_SERVICES.values())
    assert commands["worker-2"][:4] == ["celery", "worker", "--concurrency", "3"]
    assert "worker-2@%h" in commands["worker-2"]


def test_compose_and_script_share_their_settings(compose: dict[str, Any], tmp_path: Path) -> None:
    compose_env = compose["x-airflow-common"]["environment"]
    common = common_settings(Path("/opt/ise"))
    assert set(compose_env) == set(common) | set(SITE_KEYS) | set(COMPOSE_ONLY_SETTINGS)
    for key, value in common.items():
        assert compose_env[key] == value, f"docker-compose.yaml: {key}"
    script_env = _script_environment(tmp_path)
    for key, value in common_settings(REPO).items():
        assert script_env[key] == value, f"scripts/airflow_celery.py: {key}"
    for key in SITE_KEYS:
        assert script_env[key], f"scripts/airflow_celery.py does not set {key}"
    # Same shapes of address: Postgres through psycopg2 for both the metadata and results.
    for env in (compose_env, script_env):
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    # Every service of the compose file gets the common environment.
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        env = _services(compose)[name]["environment"]
        assert {key: env.get(key) for key in compose_env} == compose_env, name


def _compose_command() -> list[str]:
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise AssertionError(
        "neither `docker compose` nor `docker-compose` is installed: install Debian's "
        "docker-compose (apt-get install docker-compose), as .ci/run does"
    )


def test_compose_config_validates(tmp_path: Path) -> None:
    """The Compose tool itself accepts the file (with the .env values a user writes)."""
    env = dict(
        os.environ,
        POSTGRES_PASSWORD="pw",
        AIRFLOW_FERNET_KEY="key",
        AIRFLOW_JWT_SECRET="jwt",
        AIRFLOW_API_SECRET_KEY="secret",
    )
    done = subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE), "config", "-q"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Without the secrets it refuses, naming what to set.
    env.pop("POSTGRES_PASSWORD")
    done = subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE), "config", "-q"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr
