"""The DAG tests' environment: a private AIRFLOW_HOME, tiny projects, dag.test() runner.

Airflow reads its configuration when first imported, so the environment is set here, at
collection time, before any test module imports it. Each session gets its own AIRFLOW_HOME
(SQLite metadata database, logs) under a temp dir; the project's airflow_home/ is never used.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ise_core.config import deep_merge, settings_from_dict
from ise_core.errors import ConfigError
from tests.fakes.params import MANUAL_AIRFLOW, PERMISSIVE_GATES

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "ise_refresh.py"
BIN = Path(sys.executable).parent

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ise-airflow-home-"))
_CREATOR = os.getpid()


def _remove_home() -> None:
    if os.getpid() == _CREATOR:  # not from a forked child
        shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


atexit.register(_remove_home)

AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
os.environ.update(AIRFLOW_ENV)
# The project's params unless a test says otherwise.
os.environ.pop("ISE_PARAMS", None)
os.environ.pop("AIRFLOW_VAR_ISE_PARAMS", None)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for an Airflow command: this session's home, the venv first on PATH."""
    env = dict(os.environ)
    env.update(AIRFLOW_ENV)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def api_server_env(
    params: Path, folder: Path, port: int, password: str, **extra: str
) -> dict[str, str]:
    """The environment of Airflow components serving the REST API on 127.0.0.1:``port`` for
    ``params``: the simple auth manager's one user, ``admin``, with ``password`` (written to
    ``folder``/passwords.json), and fresh signing secrets."""
    passwords = folder / "passwords.json"
    passwords.write_text(json.dumps({"admin": password}), encoding="utf-8")
    return subprocess_env(
        ISE_PARAMS=str(params),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
        **extra,
    )


def migrate_airflow_db() -> Path:
    """``airflow db migrate`` of this session's SQLite database (once); returns AIRFLOW_HOME."""
    marker = AIRFLOW_HOME / ".migrated"
    if not marker.exists():
        done = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"airflow db migrate failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        marker.touch()
    return AIRFLOW_HOME


def airflow_project() -> Path:
    """An empty project folder at the one path every Airflow run of the session uses.

    Asset names are fixed (``ise_intents`` ...) and Airflow keeps one URI per name: runs on
    projects at different paths in one metadata database would re-point them between runs.
    """
    folder = AIRFLOW_HOME / "project"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


def tiny_params(project: Path, **blocks: dict[str, Any]) -> Path:
    """Write a tiny params.yaml in ``project``: scripted LLM, local workspace, 3 intents,
    MiniLM embeddings, gates sized for 3 intents. ``blocks`` deep-update the defaults."""
    params: dict[str, Any] = {
        "seed": 7,
        "intents": {"count": 3, "taxonomy": str(REPO / "ise_core" / "taxonomy")},
        "embedding": {"model": "all-MiniLM-L6-v2", "batch_size": 16},
        "llm": {"provider": "scripted", "max_concurrency": 4},
        "workspace": {"backend": "local", "template": str(REPO / "ise_core/workspace/template")},
        "simulate": {"max_turns": 20, "concurrency": 2},
        "export": {"valid_fraction": 0.0},
        "gates": copy.deepcopy(PERMISSIVE_GATES),
        "airflow": dict(MANUAL_AIRFLOW),
    }
    params = deep_merge(params, blocks)
    # Written out in full (every key, defaults included), as DVC reads params by key; a
    # deliberately invalid one is written as given.
    try:
        complete = settings_from_dict(params, "tiny params").model_dump(mode="json")
    except ConfigError:
        complete = params
    project.mkdir(parents=True, exist_ok=True)
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(complete, sort_keys=False), encoding="utf-8")
    return path


# Python that marks every unfinished run of the DAG ``dag_id`` failed, as a scheduler does with
# the runs of a crashed one. The tests share one metadata database, and a run a killed process
# left "running" would stay so: the DAG's runs refuse to start beside a running one.
FAIL_UNFINISHED_RUNS = r"""
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState
with create_session() as session:
    session.query(DagRun).filter(
        DagRun.dag_id == dag_id, DagRun.state.in_([DagRunState.RUNNING, DagRunState.QUEUED])
    ).update({"state": DagRunState.FAILED}, synchronize_session=False)
"""

# Runs dag.test() in a fresh interpreter (the DAG reads ISE_PARAMS at parse time) and prints
# one JSON line: the run's state and every task instance.
_DAG_TEST_SCRIPT = (
    r"""
import json, runpy, sys
from datetime import datetime
conf = json.loads(sys.argv[2])
namespace = runpy.run_path(sys.argv[1], run_name="ise_dag_under_test")
dag = namespace[sys.argv[3]]
dag_id = dag.dag_id
"""
    + FAIL_UNFINISHED_RUNS
    + r"""
when = {"logical_date": datetime.fromisoformat(sys.argv[4])} if sys.argv[4] else {}
run = dag.test(run_conf=conf or None, mark_success_pattern=sys.argv[5] or None, **when)
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
with create_session() as session:
    tis = session.query(TaskInstance).filter(
        TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run.run_id
    ).all()
    rows = [
        {"task_id": ti.task_id, "map_index": ti.map_index, "state": str(ti.state),
         "rendered_map_index": ti.rendered_map_index}
        for ti in tis
    ]
interval = [str(run.data_interval_start), str(run.data_interval_end)]
print("DAG_TEST_RESULT " + json.dumps(
    {"state": str(run.state), "tis": rows, "run_id": run.run_id, "interval": interval}
))
"""
)


def run_dag_test(
    params: Path,
    conf: dict[str, Any] | None = None,
    timeout: float = 400,
    dag_file: Path = DAG_FILE,
    logical_date: str | None = None,
    mark_success: str = "",
) -> tuple[dict[str, Any], str]:
    """``dag.test()`` of ise_refresh (or the DAG in ``dag_file``, bound to ``<stem>_dag``) on
    ``params``, at ``logical_date`` (an ISO date-time) when given; returns (result, combined
    log). Tasks whose id matches the ``mark_success`` regex are marked successful unrun."""
    script = [
        _DAG_TEST_SCRIPT,
        str(dag_file),
        json.dumps(conf or {}),
        f"{dag_file.stem}_dag",
        logical_date or "",
        mark_success,
    ]
    done = subprocess.run(
        [sys.executable, "-c", *script],
        env=subprocess_env(ISE_PARAMS=str(params)),
        cwd=params.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    log = done.stdout + done.stderr
    for line in done.stdout.splitlines():
        if line.startswith("DAG_TEST_RESULT "):
            return json.loads(line[len("DAG_TEST_RESULT ") :]), log
    raise AssertionError(f"dag.test() printed no result (exit {done.returncode}):\n{log[-6000:]}")


def states(result: dict[str, Any]) -> dict[str, list[str]]:
    """task_id → the states of its instances (one per mapped index)."""
    out: dict[str, list[str]] = {}
    for row in sorted(result["tis"], key=lambda r: (r["task_id"], r["map_index"])):
        out.setdefault(row["task_id"], []).append(row["state"])
    return out
