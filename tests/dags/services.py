"""The real Airflow services for the end-to-end DAG tests, started and stopped in one place.

The scheduler, dag-processor and API server (LocalExecutor, this session's SQLite database)
run on a free loopback port, each in its own process group, on the params file a test wrote;
the simple auth manager has one user, ``admin``, with the password ``PASSWORD``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.airflow_celery import free_port
from tests.dags.airflow_env import BIN, FAIL_UNFINISHED_RUNS, api_server_env
from tests.dags.rest import DAG_ID, Api, wait_for

PASSWORD = "e2e-" + secrets.token_hex(8)
COMPONENTS = ("api-server", "scheduler", "dag-processor")


_SETTLE = f"""
from airflow.models.dag import DagModel
from airflow.utils.session import create_session
dag_id = "{DAG_ID}"
with create_session() as session:
    session.query(DagModel).filter(DagModel.dag_id == dag_id).update({{"is_paused": True}})
{FAIL_UNFINISHED_RUNS}
print("SETTLED")
"""


def _settle_dag(env: dict[str, str]) -> None:
    """Pause ise_refresh and mark its unfinished runs failed in the metadata database, with no
    scheduler running: before the services start (an earlier test may have left the DAG
    unpaused, and an unpaused DAG with a schedule gets its latest interval's run the moment
    the new version is parsed) and after they stop (a run they left running would stay
    "running" for every later test sharing the database, and the DAG's runs refuse to start
    beside a running one)."""
    done = subprocess.run(
        [str(BIN / "python"), "-c", _SETTLE],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and "SETTLED" in done.stdout, (
        done.stdout[-2000:] + done.stderr[-2000:]
    )


@contextmanager
def airflow_services(project: Path, params: Path, folder: Path) -> Iterator[tuple[Api, Path]]:
    """scheduler + dag-processor + api-server for ``params``, run in ``project``; yields the
    (not yet logged-in) client and the folder of their logs. ise_refresh starts paused. Every
    process is stopped on the way out, and the DAG is left paused with no run unfinished."""
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = api_server_env(
        params,
        folder,
        port,
        PASSWORD,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
    )
    _settle_dag(env)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for component in COMPONENTS:
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
        yield api, logs
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
        _settle_dag(env)


def wait_for_parse(api: Api, pool: str, logs: Path) -> None:
    """Wait until *these* services parsed ise_refresh from the test's params, recognised by the
    pool only those params name (the session's database also holds versions serialized by
    earlier runs with other params); the pool is created first."""
    status, body = api.call("POST", "/api/v2/pools", {"name": pool, "slots": 2})
    assert status in (201, 409), body

    def parsed_here() -> bool:
        code, task = api.call("GET", f"/api/v2/dags/{DAG_ID}/tasks/simulate")
        return code == 200 and task.get("pool") == pool

    wait_for("the DAG to be parsed", parsed_here, 180, logs)
