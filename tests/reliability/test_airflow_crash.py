"""SIGKILL an Airflow run of the ise_refresh DAG mid-simulation, then re-run.

``dag.test()`` runs the DAG's tasks in one process; killing it while the mapped simulate
instances run is what a worker lost mid-task looks like. The re-run must skip the finished
episodes, finish the rest and publish the uninterrupted run's dataset.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import Reference
from tests.reliability.project import (
    BIN,
    REPO,
    cli_env,
    corrupt_files,
    dataset_files,
    episode_files,
    make_project,
    run_ok,
    sandbox_dirs,
    temp_files,
    wait_for_no_processes,
)

pytestmark = pytest.mark.slow

DAG_FILE = REPO / "dags" / "ise_refresh.py"
# Runs dag.test() of the DAG file in this interpreter and prints the run's final state.
DAG_TEST = r"""
import runpy, sys
dag = runpy.run_path(sys.argv[1], run_name="ise_dag_under_test")["ise_refresh_dag"]
run = dag.test()
print("DAG_STATE", run.state)
"""


def airflow_env(home: Path, params: Path) -> dict[str, str]:
    return cli_env(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        ISE_PARAMS=str(params),
    )


def start_dag_test(project: Path, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    """``dag.test()`` in a fresh interpreter, its output in ``<project>/<name>.log``."""
    log = (project / f"{name}.log").open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-c", DAG_TEST, str(DAG_FILE)],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def test_killed_dag_run_resumes_to_the_same_dataset(reference: Reference, tmp_path: Path) -> None:
    home, project = tmp_path / "airflow-home", tmp_path / "project"
    params = make_project(project)
    env = airflow_env(home, params)
    migrated = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    # Killed as soon as two episodes are written (mapped simulate instances running).
    first = start_dag_test(project, env, "first")
    deadline = time.monotonic() + 300
    try:
        while len(episode_files(project)) < 2:
            assert first.poll() is None, (project / "first.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "the DAG did not reach simulate in time"
            time.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    done_before = len(episode_files(project))
    assert 2 <= done_before < len(reference.ids)
    assert corrupt_files(project) == []
    assert wait_for_no_processes(project) == []

    # The re-run: the same stage functions through the CLI (a second dag.test() would spend
    # another half minute on the intents stage and the gates): finished episodes are skipped.
    resumed = run_ok(project, "simulate")
    assert f"{len(reference.ids) - done_before} run, {done_before} skipped" in resumed.stdout
    run_ok(project, "collect")
    run_ok(project, "export")

    assert [p.stem for p in episode_files(project)] == sorted(reference.ids)
    assert temp_files(project) == [] and sandbox_dirs(project) == []
    produced = dataset_files(project)
    assert sorted(produced) == sorted(reference.files)
    assert [name for name in produced if produced[name] != reference.files[name]] == []
    assert wait_for_no_processes(project) == []
