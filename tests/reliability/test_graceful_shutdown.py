"""SIGTERM and SIGINT to a real `ise simulate`, `ise run` and Airflow run while episodes run.

The model endpoint is the loopback server answering with the scripted programs, slowed down
(``LATENCY_S`` per request), so that episodes are still running when the signal arrives. After
the signal: the command ends within its grace period plus the teardown, with the message and
128 + the signal number; no sandbox directory, sandbox process or container is left; every
episode file is whole; and a re-run of the same command does exactly what is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ise_core.config import load_settings
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability.conftest import Reference
from tests.reliability.project import (
    BIN,
    REPO,
    cli_env,
    copy_intents,
    corrupt_files,
    episode_files,
    ise_argv,
    make_project,
    sandbox_dirs,
    temp_files,
    wait_for_no_processes,
)
from tests.reliability.scripted_endpoint import ScriptedEndpoint
from tests.workspace import docker_engine
from tests.workspace.fixtures import require_backend

pytestmark = pytest.mark.slow
LATENCY_S = 0.15
CONCURRENCY = 3


class SlowEndpoint:
    """The scripted programs behind a loopback OpenAI server that takes its time."""

    def __init__(self) -> None:
        self.endpoint: ScriptedEndpoint | None = None
        self.server = FakeOpenAIServer(self._answer, latency_s=LATENCY_S)

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.endpoint is not None
        return self.endpoint(request)


@pytest.fixture
def slow_endpoint() -> Iterator[SlowEndpoint]:
    slow = SlowEndpoint()
    with slow.server:
        yield slow


def project_for(
    tmp_path: Path,
    reference: Reference,
    slow: SlowEndpoint,
    backend: str,
    grace_s: float,
    monkeypatch: pytest.MonkeyPatch,
    pool_size: int = 0,
) -> tuple[Path, dict[str, str]]:
    """A project with the reference intents whose roles go to the slow endpoint."""
    extra = require_backend(backend, monkeypatch)
    project = tmp_path / "project"
    params = make_project(
        project,
        llm={
            "provider": "openai",
            "base_url": slow.server.base_url,
            "model": "scripted-over-http",
            "cache": "off",
            "max_concurrency": 8,
        },
        workspace={"backend": backend, "pool_size": pool_size, **extra},
        simulate={"concurrency": CONCURRENCY, "shutdown_grace_s": grace_s},
    )
    copy_intents(reference.project, project)
    slow.endpoint = ScriptedEndpoint(load_settings(params))
    env = cli_env(OPENAI_API_KEY="")
    if backend == "docker":
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    return project, env


def start(project: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ise_argv(*args, "--params", str(project / "params.yaml")),
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_sandboxes(project: Path, process: subprocess.Popen[str], count: int) -> None:
    deadline = time.monotonic() + 120
    while len([d for d in sandbox_dirs(project) if d.name.startswith("ise-sbx-")]) < count:
        if process.poll() is not None:
            raise AssertionError(f"ise ended early: {process.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "the episodes did not start in time"
        time.sleep(0.02)


def containers_of(pid: int) -> list[str]:
    engine = docker_engine.engine()
    if isinstance(engine, str):
        return []
    client = docker_engine._client(engine.docker_host)
    try:
        found = client.containers.list(all=True, filters={"label": f"ise.owner_pid={pid}"})
        return [c.name for c in found]
    finally:
        client.close()


def simulating(
    tmp_path: Path,
    reference: Reference,
    slow: SlowEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    *,
    grace_s: float,
    backend: str = "local",
    pool_size: int = 0,
) -> tuple[Path, dict[str, str], subprocess.Popen[str]]:
    """`ise simulate` on a fresh project, once its first episodes are running."""
    project, env = project_for(tmp_path, reference, slow, backend, grace_s, monkeypatch, pool_size)
    process = start(project, env, "simulate")
    wait_for_sandboxes(project, process, CONCURRENCY)
    return project, env, process


def assert_nothing_left(project: Path, pid: int) -> None:
    assert sandbox_dirs(project) == []
    assert wait_for_no_processes(project) == []
    assert containers_of(pid) == []
    assert corrupt_files(project) == [] and temp_files(project) == []


def assert_none_failed(summary: str) -> None:
    """Every episode that ran went through (the endpoint answered it as the intent's)."""
    assert " 0 failed" in summary, summary[-3000:]


def assert_rerun_does_the_rest(project: Path, env: dict[str, str], reference: Reference) -> None:
    """The same command again: exactly the unfinished intents run, none fails, nothing left."""
    done = len(episode_files(project))
    assert done < len(reference.ids)
    rerun = start(project, env, "simulate")
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert f"{len(reference.ids) - done} run, {done} skipped" in out + err
    assert_none_failed(out + err)
    assert [p.stem for p in episode_files(project)] == sorted(reference.ids)
    assert_nothing_left(project, rerun.pid)


@pytest.mark.parametrize(
    ("backend", "pool_size"),
    [("local", 0), ("docker", 0), ("docker", CONCURRENCY)],
    ids=["local", "docker", "docker-pool"],
)
def test_sigterm_abandons_running_episodes_after_the_grace_period(
    reference: Reference,
    slow_endpoint: SlowEndpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    pool_size: int,
) -> None:
    project, env, process = simulating(
        tmp_path,
        reference,
        slow_endpoint,
        monkeypatch,
        grace_s=1.0,
        backend=backend,
        pool_size=pool_size,
    )
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    # The grace period, then the teardown of three sandboxes: seconds, not an episode's length.
    assert time.monotonic() - signalled < 15, err
    assert process.returncode == 143, err
    assert "SIGTERM received: no new episode starts" in err
    assert "stopped by SIGTERM" in err and "re-run" in err and "Traceback" not in err
    assert_none_failed(err)
    assert_nothing_left(project, process.pid)
    assert_rerun_does_the_rest(project, env, reference)


def test_running_episodes_finish_within_a_long_grace_period(
    reference: Reference,
    slow_endpoint: SlowEndpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project, env, process = simulating(
        tmp_path, reference, slow_endpoint, monkeypatch, grace_s=300.0
    )
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 143, err
    # The three running episodes finished and were written; the other three never started.
    assert len(episode_files(project)) == CONCURRENCY
    assert f"{len(reference.ids) - CONCURRENCY} not started" in err
    assert f"{CONCURRENCY} run" in err
    assert_none_failed(err)
    assert_nothing_left(project, process.pid)
    assert_rerun_does_the_rest(project, env, reference)


def test_a_second_signal_stops_at_once_and_still_cleans_up(
    reference: Reference,
    slow_endpoint: SlowEndpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project, env, process = simulating(
        tmp_path, reference, slow_endpoint, monkeypatch, grace_s=300.0
    )
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # inside the 300 s grace period
    assert process.poll() is None
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert time.monotonic() - signalled < 15, err
    assert process.returncode == 143, err
    assert "SIGTERM received again: abandoning the running episodes now" in err, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err, err
    assert_none_failed(err)  # the abandoned episodes are not taken for failures
    assert_nothing_left(project, process.pid)
    assert_rerun_does_the_rest(project, env, reference)


def test_sigint_stops_ise_run_before_the_later_stages(
    reference: Reference,
    slow_endpoint: SlowEndpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project, env = project_for(tmp_path, reference, slow_endpoint, "local", 0.5, monkeypatch)
    process = start(project, env, "run")
    wait_for_sandboxes(project, process, 1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "stopped by SIGINT" in err and "Traceback" not in err
    assert not (project / "data" / "sft").exists()  # collect and export did not run
    assert_nothing_left(project, process.pid)


# --- the Airflow task ----------------------------------------------------------------------

DAG_FILE = REPO / "dags" / "ise_refresh.py"
DAG_TEST = r"""
import runpy, sys
dag = runpy.run_path(sys.argv[1], run_name="ise_dag_under_test")["ise_refresh_dag"]
run = dag.test()
print("DAG_STATE", run.state)
"""


def test_sigterm_to_an_airflow_simulate_task(
    reference: Reference,
    slow_endpoint: SlowEndpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project, env = project_for(tmp_path, reference, slow_endpoint, "local", 1.0, monkeypatch)
    home = tmp_path / "airflow-home"
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        ISE_PARAMS=str(project / "params.yaml"),
    )
    migrated = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    log_path = project / "dag.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", DAG_TEST, str(DAG_FILE)],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 600
        while not [d for d in sandbox_dirs(project) if d.name.startswith("ise-sbx-")]:
            assert process.poll() is None, log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, "the DAG did not reach simulate in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        # The task stops, tears its sandboxes down and fails; the run ends failed.
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text(errors="replace")
    assert "SIGTERM received: no new episode starts" in text
    assert "stopped by SIGTERM" in text
    assert "DAG_STATE failed" in text, text[-4000:]
    assert_nothing_left(project, process.pid)
