"""Fixtures for the DAG tests; importing airflow_env sets Airflow's environment first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dags.airflow_env import migrate_airflow_db


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in this session's AIRFLOW_HOME (≈3-7 s, once)."""
    return migrate_airflow_db()
