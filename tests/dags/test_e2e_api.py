"""End to end: the real scheduler, dag-processor and API server on 127.0.0.1, driven over REST.

Starts the three components (LocalExecutor, this session's SQLite database) in their own
process groups, logs in through the simple auth manager's token endpoint, unpauses and
triggers ise_refresh with a run conf, polls the run to success, reads the mapped simulate
instances back, and stops every process it started.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.airflow_celery import free_port
from tests.dags.airflow_env import BIN, airflow_project, subprocess_env, tiny_params
from tests.dags.rest import DAG_ID, Api, failure_report, wait_for

pytestmark = pytest.mark.slow

POOL = "ise_e2e_llm"  # only this test's params name it, so it marks the DAG version parsed here
PASSWORD = "e2e-" + secrets.token_hex(8)


@pytest.fixture
def airflow_services(airflow_db: Path, tmp_path: Path) -> Iterator[tuple[Api, Path, Path]]:
    """scheduler + dag-processor + api-server on a free loopback port; stopped in finally."""
    project = airflow_project()
    params = tiny_params(
        project, intents={"count": 2}, airflow={"max_active_tis_per_dag": 2, "pool": POOL}
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"admin": PASSWORD}), encoding="utf-8")
    port = free_port()
    env = subprocess_env(
        ISE_PARAMS=str(params),
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
        AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for component in ("api-server", "scheduler", "dag-processor"):
            log = (logs / f"{component}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [str(BIN / "airflow"), component],
                    env=env,
                    cwd=project,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, stopped as one
                )
            )
        api = Api(f"http://127.0.0.1:{port}")
        wait_for("the API server", lambda: api.call("GET", "/api/v2/version")[0] == 200, 180, logs)
        yield api, project, logs
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_run_triggered_through_the_rest_api(airflow_services: tuple[Api, Path, Path]) -> None:
    api, project, logs = airflow_services

    # The JWT token endpoint of the simple auth manager; nothing works without the token.
    status, _ = api.call("GET", f"/api/v2/dags/{DAG_ID}")
    assert status == 401
    status, body = api.call("POST", "/auth/token", {"username": "admin", "password": PASSWORD})
    assert status == 201, body
    api.token = body["access_token"]

    status, body = api.call("POST", "/api/v2/pools", {"name": POOL, "slots": 2})
    assert status in (201, 409), body

    # Parsed by *this* dag-processor from this test's params (the session's database also
    # holds versions serialized by earlier dag.test() runs with other params).
    def parsed_here() -> bool:
        code, task = api.call("GET", f"/api/v2/dags/{DAG_ID}/tasks/simulate")
        return code == 200 and task.get("pool") == POOL

    wait_for("the DAG to be parsed", parsed_here, 180, logs)
    status, body = api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    assert status == 200 and body["is_paused"] is False, body
    assert set(body["tags"][i]["name"] for i in range(len(body["tags"]))) >= {"ise", "dataset"}

    status, run = api.call(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"seed": 7}}
    )
    assert status == 200, run
    run_id = run["dag_run_id"]
    assert run["conf"] == {"seed": 7}

    def finished() -> str | None:
        code, current = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        state = current.get("state") if code == 200 else None
        return state if state in ("success", "failed") else None

    state = wait_for("the run to finish", finished, 420, logs)
    assert state == "success", failure_report(api, run_id)

    ids = [
        json.loads(line)["id"]
        for line in (project / "data/intents/intents.jsonl").read_text().splitlines()
    ]
    assert len(ids) == 2
    status, mapped = api.call(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/simulate/listMapped"
    )
    assert status == 200, mapped
    instances = sorted(mapped["task_instances"], key=lambda ti: ti["map_index"])
    assert mapped["total_entries"] == len(ids)
    assert [ti["map_index"] for ti in instances] == [0, 1]
    assert [ti["state"] for ti in instances] == ["success", "success"]
    # Mapped instances start longest episode first, so their order is not the intents' order.
    assert sorted(ti["rendered_map_index"] for ti in instances) == sorted(ids)
    assert all(ti["pool"] == POOL for ti in instances)

    status, tis = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    assert status == 200
    assert {ti["task_id"]: ti["state"] for ti in tis["task_instances"] if ti["map_index"] < 0} == {
        task: "success"
        for task in (
            "write_out",
            "intents",
            "gate_intents",
            "plan_simulation",
            "collect",
            "gate_trajectories",
            "export",
            "gate_sft",
            "record_lineage",
        )
    }
    assert (project / "data/sft/train.jsonl").read_text().count("\n") >= 1

    # The run published its assets (a training DAG could be scheduled on ise_sft).
    status, events = api.call("GET", "/api/v2/assets/events?source_dag_id=" + DAG_ID)
    assert status == 200, events
    published = {event["uri"] for event in events["asset_events"]}
    assert (project / "data/sft/train.jsonl").resolve().as_uri() in published
