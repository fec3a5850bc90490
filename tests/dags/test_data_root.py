"""One data root for every worker: plan_simulation marks it, simulate and collect check it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ise_core.config import load_settings
from ise_core.errors import ConfigError
from ise_core.pipeline import check_data_root, data_root_marker, mark_data_root
from tests.dags.airflow_env import tiny_params


def test_a_worker_on_the_same_data_root_passes(tmp_path: Path) -> None:
    settings = load_settings(tiny_params(tmp_path / "project"))
    token = mark_data_root(settings, "manual__1")
    marker = json.loads(data_root_marker(settings).read_text())
    assert marker["token"] == token and marker["run_id"] == "manual__1"
    check_data_root(settings, token)  # the same folder: nothing to say
    check_data_root(settings, None)  # a run that wrote no marker: nothing to check


def test_a_worker_without_the_shared_volume_fails_saying_what_to_fix(tmp_path: Path) -> None:
    scheduler = load_settings(tiny_params(tmp_path / "scheduler"))
    token = mark_data_root(scheduler, "manual__1")
    # A worker whose project folder is a copy without the shared data (e.g. a local disk).
    worker_params = tmp_path / "worker" / "params.yaml"
    worker_params.parent.mkdir()
    shutil.copy(tmp_path / "scheduler" / "params.yaml", worker_params)
    worker = load_settings(worker_params)
    with pytest.raises(ConfigError) as caught:
        check_data_root(worker, token)
    message = str(caught.value)
    assert str(data_root_marker(worker)) in message and "it is missing" in message
    assert "shared volume" in message and "same path" in message


def test_a_stale_data_root_from_another_run_fails(tmp_path: Path) -> None:
    settings = load_settings(tiny_params(tmp_path / "project"))
    mark_data_root(settings, "manual__old")
    with pytest.raises(ConfigError, match=r"belongs to run 'manual__old'"):
        check_data_root(settings, "token-of-this-run")
