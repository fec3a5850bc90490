"""docker-compose.yaml's structure: the services, healthchecks, volumes and executor settings.

No Docker Compose runs here, so this checks the file itself (after resolving YAML anchors).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

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
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
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
