"""End to end: the real scheduler, dag-processor and API server on 127.0.0.1, driven over REST.

Starts the three components (LocalExecutor, this session's SQLite database) in their own
process groups, logs in through the simple auth manager's token endpoint, unpauses and
triggers ise_refresh with a run conf, polls the run to success, reads the mapped simulate
instances back, and stops every process it started.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dags.airflow_env import airflow_project, tiny_params
from tests.dags.rest import DAG_ID, Api, failure_report, run_state, wait_for
from tests.dags.services import PASSWORD, airflow_services, wait_for_parse

pytestmark = pytest.mark.slow

POOL = "ise_e2e_llm"  # only this test's params name it, so it marks the DAG version parsed here


@pytest.fixture
def services(airflow_db: Path, tmp_path: Path) -> Iterator[tuple[Api, Path, Path]]:
    """The services on a tiny manual project of two intents; stopped in finally."""
    project = airflow_project()
    params = tiny_params(
        project, intents={"count": 2}, airflow={"max_active_tis_per_dag": 2, "pool": POOL}
    )
    with airflow_services(project, params, tmp_path) as (api, logs):
        yield api, project, logs


def test_run_triggered_through_the_rest_api(services: tuple[Api, Path, Path]) -> None:
    api, project, logs = services

    # The JWT token endpoint of the simple auth manager; nothing works without the token.
    status, _ = api.call("GET", f"/api/v2/dags/{DAG_ID}")
    assert status == 401
    status, body = api.call("POST", "/auth/token", {"username": "admin", "password": PASSWORD})
    assert status == 201, body
    api.token = body["access_token"]

    wait_for_parse(api, POOL, logs)
    status, body = api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    assert status == 200 and body["is_paused"] is False, body
    assert set(body["tags"][i]["name"] for i in range(len(body["tags"]))) >= {"ise", "dataset"}

    status, run = api.call(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"seed": 7}}
    )
    assert status == 200, run
    run_id = run["dag_run_id"]
    assert run["conf"] == {"seed": 7}

    state = wait_for("the run to finish", lambda: run_state(api, run_id), 420, logs)
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
