"""Fixtures for the DAG tests; importing airflow_env sets Airflow's environment first."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.dags.airflow_env import AIRFLOW_HOME, BIN, subprocess_env


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in this session's AIRFLOW_HOME (≈3-7 s, once)."""
    marker = AIRFLOW_HOME / ".migrated"
    if not marker.exists():
        done = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        marker.touch()
    return AIRFLOW_HOME
