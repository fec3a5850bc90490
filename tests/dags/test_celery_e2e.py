"""ise_refresh on a real CeleryExecutor: Postgres, Redis, scheduler, dag-processor, API server
and two Celery workers on 127.0.0.1 (scripts/airflow_celery.py), driven over the REST API.

One deployment serves the module; each test empties the project's data/ and triggers a run
of the same 24-intent params, so every run must produce the bytes of ``ise run`` on those
params. The first run must spread its mapped simulate instances over both workers; the second
loses a worker to SIGKILL mid-simulation; the third loses its scheduler (stopped and started
again) mid-simulation. Every run must still succeed with each episode written exactly once,
no torn or temporary file, and no sandbox left behind.

A service that cannot start (Postgres, Redis, an Airflow component) fails the module with
its reason and log; nothing is skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.airflow_celery import CeleryDeployment
from tests.dags.airflow_env import REPO, tiny_params
from tests.dags.rest import DAG_ID, Api, failure_report, run_state, wait_for
from tests.reliability.project import (
    cli_env,
    corrupt_files,
    ise_argv,
    processes_referring_to,
    sandbox_dirs,
    temp_files,
)

pytestmark = pytest.mark.slow

INTENTS = 24
WORKERS = ("worker-1", "worker-2")
# A killed worker's task instances are failed (and retried elsewhere) once their heartbeat
# is this many seconds old; Airflow's default (300 s) would make the test wait five minutes.
FAST_RECOVERY = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "5",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "90",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
    "AIRFLOW__CORE__PARALLELISM": "8",
}
BLOCKS: dict[str, Any] = {
    "intents": {"count": INTENTS},
    "simulate": {"concurrency": 1},
    "airflow": {
        "max_active_tis_per_dag": 4,
        "pool_size": 4,
        "retries": 3,
        "retry_delay_s": 1,
        "max_retry_delay_s": 2,
    },
}


@dataclass
class Stack:
    deployment: CeleryDeployment
    api: Api
    project: Path
    logs: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    project = tmp_path_factory.mktemp("celery-project")
    params = tiny_params(project, **BLOCKS)
    # Not under pytest's private temp root: the postgres user must reach its cluster inside.
    home = Path(tempfile.mkdtemp(prefix="ise-celery-"))
    home.chmod(0o755)
    deployment = CeleryDeployment(
        home,
        params=params,
        workers=len(WORKERS),
        concurrency=2,
        triggerer=False,  # the DAG defers nothing
        settings=FAST_RECOVERY,
    )
    try:
        deployment.start()
        api = Api(deployment.api_url)
        api.login(deployment.secrets.admin_password)

        def parsed() -> bool:
            code, _ = api.call("GET", f"/api/v2/dags/{DAG_ID}/tasks/simulate")
            return code == 200

        wait_for("the DAG to be parsed", parsed, 240, deployment.logs)
        status, body = api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        assert status == 200, body
        yield Stack(deployment, api, project, deployment.logs)
    finally:
        deployment.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """``ise run`` on the same params, in a folder of its own: train.jsonl's bytes."""
    project = tmp_path_factory.mktemp("celery-reference")
    params = tiny_params(project, **BLOCKS)
    done = subprocess.run(
        ise_argv("run", "--params", str(params)),
        cwd=project,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"ise run failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return (project / "data" / "sft" / "train.jsonl").read_bytes()


def trigger(stack: Stack) -> str:
    """A fresh run on an emptied data folder (sandboxes and caches stay: they must be clean)."""
    shutil.rmtree(stack.project / "data", ignore_errors=True)
    status, run = stack.api.call(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {}}
    )
    assert status == 200, run
    return str(run["dag_run_id"])


def simulate_instances(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    status, body = stack.api.call(
        "GET",
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/simulate/listMapped?limit=1000",
    )
    assert status == 200, body
    return list(body["task_instances"])


def wait_until_running_on(stack: Stack, run_id: str, worker: str, done_at_least: int) -> None:
    """Until ``worker`` runs a simulate instance and some instances have finished."""

    def ready() -> bool:
        instances = simulate_instances(stack, run_id)
        finished = sum(ti["state"] == "success" for ti in instances)
        running = [ti for ti in instances if ti["state"] == "running"]
        return finished >= done_at_least and any(ti["hostname"] == worker for ti in running)

    wait_for(f"a simulate instance running on {worker}", ready, 300, stack.logs)


def finish(stack: Stack, run_id: str) -> None:
    state = wait_for("the run to finish", lambda: run_state(stack.api, run_id), 600, stack.logs)
    assert state == "success", failure_report(stack.api, run_id)


def assert_complete_and_clean(stack: Stack, run_id: str, reference: bytes) -> None:
    """Every episode exactly once, whole; the reference dataset's bytes; no sandbox left."""
    project = stack.project
    ids = [
        json.loads(line)["id"]
        for line in (project / "data/intents/intents.jsonl").read_text().splitlines()
    ]
    episodes = sorted(p.stem for p in (project / "data/trajectories/episodes").glob("*.json"))
    assert episodes == sorted(ids), "one episode file per intent, no more, no less"
    assert corrupt_files(project) == [], "a torn or unreadable output file"
    assert temp_files(project) == [], "an atomic write left its temp file"
    rows = (project / "data/trajectories/trajectories.jsonl").read_text().splitlines()
    kept = [json.loads(row)["intent_id"] for row in rows]
    assert len(kept) == len(set(kept)), "an episode was collected twice"
    assert (project / "data/sft/train.jsonl").read_bytes() == reference
    # The reaper ran (at the start of later simulate instances): nothing left behind.
    assert sandbox_dirs(project) == []
    assert processes_referring_to(project / ".cache" / "sandboxes") == []
    instances = simulate_instances(stack, run_id)
    assert len(instances) == len(ids)
    assert all(ti["state"] == "success" for ti in instances), failure_report(stack.api, run_id)


def test_mapped_instances_spread_over_both_workers(stack: Stack, reference: bytes) -> None:
    run_id = trigger(stack)
    finish(stack, run_id)
    instances = simulate_instances(stack, run_id)
    hosts = {ti["hostname"] for ti in instances}
    assert hosts == set(WORKERS), f"simulate instances ran on {hosts}"
    # Every other task ran on a worker too (the CeleryExecutor runs nothing elsewhere).
    _, tis = stack.api.call(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=1000"
    )
    assert {ti["hostname"] for ti in tis["task_instances"]} <= set(WORKERS)
    assert_complete_and_clean(stack, run_id, reference)


def test_a_worker_killed_mid_run_loses_nothing(stack: Stack, reference: bytes) -> None:
    run_id = trigger(stack)
    victim = WORKERS[0]
    wait_until_running_on(stack, run_id, victim, done_at_least=2)
    stack.deployment.components[victim].kill()  # SIGKILL to the worker and its task processes
    killed_at = time.monotonic()
    try:
        finish(stack, run_id)
    finally:
        stack.deployment.start_worker(victim)
    instances = simulate_instances(stack, run_id)
    retried = [ti for ti in instances if ti["try_number"] > 1]
    assert retried, "no simulate instance was lost with the worker (killed too late?)"
    assert all(ti["hostname"] == WORKERS[1] for ti in retried)
    print(f"run finished {time.monotonic() - killed_at:.0f} s after the kill")
    assert_complete_and_clean(stack, run_id, reference)


def test_a_scheduler_restart_mid_run_loses_nothing(stack: Stack, reference: bytes) -> None:
    stack.deployment.wait_for_workers(120)  # the worker restarted by the previous test
    run_id = trigger(stack)
    wait_until_running_on(stack, run_id, WORKERS[1], done_at_least=2)
    scheduler = stack.deployment.components["scheduler"]
    scheduler.stop()
    time.sleep(3)  # instances in flight go on without it
    stack.deployment.start_scheduler()
    finish(stack, run_id)
    assert_complete_and_clean(stack, run_id, reference)


def test_the_script_is_what_make_runs() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "scripts/airflow_celery.py" in makefile.split("airflow-celery:", 2)[-1]
