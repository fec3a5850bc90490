"""Builds the determinism tests check, each on its own fresh copy with the same tiny params:

- ``cli``     `ise run`, to compare with the session's `dvc repro`
- ``dag``     dag.test() of the Airflow DAG, likewise
- ``openai``  `ise run` against the loopback OpenAI-compatible server, then again with the
              data deleted, from the LLM cache alone

They run in background threads beside the session's ``dvc repro`` (the DAG run is about half
waiting), and the tests collect their results.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.dvc.project import BIN, REPO, Project, run
from tests.dvc.scripted_endpoint import ScriptedEndpoint
from tests.fakes.openai_server import FakeOpenAIServer


@dataclass
class ReferenceBuild:
    project: Project
    ok: bool
    log: str
    result: dict[str, Any] = field(default_factory=dict)


def airflow_missing() -> str | None:
    """Why the DAG cannot run here, or None."""
    if not (REPO / "dags" / "ise_refresh.py").is_file():
        return "no DAG file dags/ise_refresh.py"
    if importlib.util.find_spec("airflow") is None:
        return "Airflow is not installed"
    return None


def cli_build(root: Path, timings: dict[str, float]) -> ReferenceBuild:
    project = Project.create(root, timings=timings)
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "ise"), "run"],
        cwd=root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    timings["ise run, fresh copy (beside the others)"] = round(time.monotonic() - started, 1)
    return ReferenceBuild(project, done.returncode == 0, done.stdout + done.stderr)


def dag_build(root: Path, timings: dict[str, float]) -> ReferenceBuild:
    """dag.test() of dags/ise_refresh.py on the copy's params (the DAG tests' runner and
    their private AIRFLOW_HOME, migrated once)."""
    from tests.dags.airflow_env import AIRFLOW_HOME, airflow_project, run_dag_test, subprocess_env

    # Every Airflow run of a session must use one project path: asset names are fixed and
    # Airflow keeps one URI per name, so a second path in the same metadata DB fails the
    # gate tasks that publish them. ``root`` is only a hint for where the caller wanted it.
    del root
    root = airflow_project()
    project = Project.create(root, timings=timings)
    marker = AIRFLOW_HOME / ".migrated"
    if not marker.exists():
        run([BIN / "airflow", "db", "migrate"], AIRFLOW_HOME, subprocess_env(), timeout=300)
        marker.touch()
    started = time.monotonic()
    result, log = run_dag_test(root / "params.yaml", timeout=900)
    timings["dag.test(), fresh copy (beside the others)"] = round(time.monotonic() - started, 1)
    return ReferenceBuild(project, result.get("state") == "success", log, result)


@dataclass
class CacheReplay:
    """Two `ise run`s against the endpoint: the first answered over HTTP, the second (data
    deleted) from the LLM cache."""

    project: Project
    first: dict[str, bytes]
    second: dict[str, bytes]
    calls: dict[str, int]  # requests the endpoint answered, per role, in the first run
    first_requests: int
    replay_requests: int


def openai_build(root: Path, timings: dict[str, float]) -> CacheReplay:
    endpoint = ScriptedEndpoint(root / "params.yaml")
    with FakeOpenAIServer(endpoint) as server:
        llm = {
            "provider": "openai",
            "base_url": server.base_url,
            "model": "fake-model",
            "max_retries": 1,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.05,
        }
        project = Project.create(root, {"llm": llm}, timings=timings)
        project.timed("ise run, OpenAI-compatible endpoint", "ise", "run")
        first_requests, first = server.requests, project.produced_files()
        calls = dict(endpoint.calls)
        shutil.rmtree(root / "data")  # .cache/llm stays
        server.reset()
        project.timed("ise run, OpenAI endpoint, from the LLM cache", "ise", "run")
        replay_requests = server.requests
    return CacheReplay(
        project, first, project.produced_files(), calls, first_requests, replay_requests
    )


@dataclass
class ReferenceBuilds:
    futures: dict[str, Future[Any]]
    dag_missing: str | None  # why the DAG cannot run here

    def result(self, name: str) -> Any:
        return self.futures[name].result(timeout=900)


def start(base: Path, timings: dict[str, float], wanted: Collection[str]) -> ReferenceBuilds:
    """Start the ``wanted`` builds (of cli, dag, openai) in background threads."""
    missing = airflow_missing()
    builders: dict[str, Callable[[Path, dict[str, float]], Any]] = {
        "cli": cli_build,
        "openai": openai_build,
    }
    if missing is None:
        # Sets this session's Airflow environment (os.environ): here, not in a thread.
        import tests.dags.airflow_env  # noqa: F401

        builders["dag"] = dag_build
    chosen = [name for name in builders if name in wanted]
    pool = ThreadPoolExecutor(max_workers=max(1, len(chosen)), thread_name_prefix="build")
    futures = {name: pool.submit(builders[name], base / name, timings) for name in chosen}
    pool.shutdown(wait=False)
    return ReferenceBuilds(futures, missing)
