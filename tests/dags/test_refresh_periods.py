"""Scheduled refresh periods through real ``dag.test()`` runs at logical dates (scripted LLM).

One project lives through a schedule: periods 0 and 1 run on time, period 3 fails at its
export gate and is then re-run, period 2 (missed) is backfilled, and period 1 runs again.
Each run's data interval names its period; each period adds exactly its batch of sample
indices and leaves every earlier record byte for byte as it was; the failed period leaves the
previous dataset (files, Asset event, dvc.lock) published; a re-run changes no byte; and the
final dataset is the one ``ise refresh --period`` builds running the four periods in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ise_core.config import load_settings
from ise_core.pipeline import output_paths
from ise_core.refresh.periods import Ledger
from ise_core.stages import STAGE_NAMES
from tests.dags.airflow_env import (
    airflow_project,
    run_dag_test,
    states,
    subprocess_env,
    tiny_params,
)
from tests.dags.periods import (
    PER_PERIOD,
    REFRESH,
    batch,
    built_in_order,
    check_added_exactly_its_batch,
    check_same_dataset,
    lines,
    snapshot,
)
from tests.dags.test_dag_run import _dvc, _make_dvc_project

pytestmark = pytest.mark.slow

PERIODS = ["2026-01-04", "2026-01-11", "2026-01-18", "2026-01-25"]
# A gate no dataset can pass: the third period's export must fail its gate.
IMPOSSIBLE_SFT_GATE = {"gates": {"sft": {"min_train_rows": 1_000_000}}}

_ASSET_EVENTS = r"""
import json
from airflow.models.asset import AssetEvent, AssetModel
from airflow.utils.session import create_session
with create_session() as session:
    rows = (
        session.query(AssetEvent.source_run_id, AssetModel.uri)
        .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        .filter(AssetModel.name == "ise_sft")
        .order_by(AssetEvent.id)
        .all()
    )
print("ASSET_EVENTS " + json.dumps([[run, uri] for run, uri in rows]))
"""


def _interval_end(period: str) -> str:
    """The logical date at which dag.test() runs the interval starting at ``period``: a
    manual run at time t covers the last whole interval before t (the scheduler's run of
    that interval starts then too)."""
    index = PERIODS.index(period)
    following = PERIODS[index + 1] if index + 1 < len(PERIODS) else "2026-02-01"
    return f"{following}T00:00:00+00:00"


def _run_period(params: Path, period: str) -> tuple[dict[str, Any], str]:
    result, log = run_dag_test(params, logical_date=_interval_end(period), timeout=600)
    start = result["interval"][0]
    assert start.startswith(period), (period, result["interval"])
    return result, log


def _changed(before: Mapping[str, bytes], after: Mapping[str, bytes]) -> list[str]:
    return sorted(k for k in {*before, *after} if before.get(k) != after.get(k))


def _asset_events() -> list[list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _ASSET_EVENTS],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    for line in done.stdout.splitlines():
        if line.startswith("ASSET_EVENTS "):
            rows: list[list[str]] = json.loads(line[len("ASSET_EVENTS ") :])
            return rows
    raise AssertionError(f"no asset events printed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")


def test_scheduled_and_backfilled_periods_each_add_their_batch(
    airflow_db: Path, tmp_path: Path
) -> None:
    project = airflow_project()
    params = tiny_params(project, **REFRESH)
    _make_dvc_project(project)
    with built_in_order(tmp_path / "in_order", PERIODS) as wait_in_order:
        _live_through_the_schedule(project, params)
        wait_in_order()
    # The backfilled dataset is the one the four periods build in order.
    check_same_dataset(project, tmp_path / "in_order")


def _live_through_the_schedule(project: Path, params: Path) -> None:
    growth = project / "data/sft/plots/growth.png"
    # Other tests' DAG runs share this metadata database (and the project path): count only
    # the events from here on.
    earlier = len(_asset_events())

    # Periods 0 and 1, on schedule.
    published: dict[str, dict[str, bytes]] = {}
    before: dict[str, bytes] = {}
    for period in PERIODS[:2]:
        result, log = _run_period(params, period)
        assert result["state"] == "success", log[-6000:]
        check_added_exactly_its_batch(project, before, period)
        before = published[period] = snapshot(project)
    assert growth.is_file() and growth.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lock = (project / "dvc.lock").read_bytes()
    events = _asset_events()[earlier:]
    assert len(events) == 2 and events[0][1] == output_paths(load_settings(params))["sft"].as_uri()

    # Period 3 (period 2 is missed): its export fails its gate.
    strict = tiny_params(project, **REFRESH, **IMPOSSIBLE_SFT_GATE)
    result, log = _run_period(strict, PERIODS[3])
    by_task = states(result)
    assert result["state"] == "failed"
    assert by_task["export"] == ["success"] and by_task["gate_sft"] == ["failed"], by_task
    assert by_task["record_lineage"] == ["upstream_failed"]
    assert "the previous dataset is published again" in log
    # The Asset still points at period 1's dataset: the same files, no new event, same lock.
    after_failure = snapshot(project)
    published_files = [n for n in published[PERIODS[1]] if n.startswith("data/sft/")]
    assert published_files and all(
        after_failure.get(n) == published[PERIODS[1]][n] for n in published_files
    )
    assert [n for n in after_failure if n.startswith("data/sft/")] == published_files
    assert _asset_events()[earlier:] == events
    assert (project / "dvc.lock").read_bytes() == lock
    recorded = [json.loads(line)["period"] for line in lines(project, "data/refresh/history.jsonl")]
    assert recorded == PERIODS[:2]

    # Its re-run with the gate fixed resumes the period: the same batch, then published.
    tiny_params(project, **REFRESH)
    result, log = _run_period(params, PERIODS[3])
    assert result["state"] == "success", log[-6000:]
    check_added_exactly_its_batch(project, published[PERIODS[1]], PERIODS[3])
    assert len(_asset_events()[earlier:]) == 3
    assert (project / "dvc.lock").read_bytes() != lock
    before = snapshot(project)

    # Period 2, backfilled after period 3: exactly its batch, between the others.
    result, log = _run_period(params, PERIODS[2])
    assert result["state"] == "success", log[-6000:]
    check_added_exactly_its_batch(project, before, PERIODS[2])
    ledger = Ledger.load(project / "data/refresh/periods.json")
    assert [entry.period for entry in ledger.entries] == PERIODS
    assert [entry.index for entry in ledger.entries] == [0, 1, 2, 3]

    # A re-run of a period already in the dataset changes no byte.
    before, lock = snapshot(project), (project / "dvc.lock").read_bytes()
    result, log = _run_period(params, PERIODS[1])
    assert result["state"] == "success", log[-6000:]
    assert _changed(before, snapshot(project)) == []
    assert (project / "dvc.lock").read_bytes() == lock

    # The history has one line per period; the card shows the growth.
    history = [json.loads(line) for line in lines(project, "data/refresh/history.jsonl")]
    assert [h["period"] for h in history] == PERIODS
    assert all(h["intents_added"] == PER_PERIOD for h in history)
    assert [h["batch"]["first"] for h in history] == [batch(p)[0] for p in PERIODS]
    card = (project / "data/sft/README.md").read_text(encoding="utf-8")
    assert "## Refresh periods" in card and "plots/growth.png" in card
    for period in PERIODS:
        assert f"| {period} |" in card
    stats = json.loads((project / "data/sft/stats.json").read_text(encoding="utf-8"))
    settings = load_settings(params)
    assert stats["periods"] == PERIODS and settings.refresh.mode == "grow"
    # dvc.lock records the last period's outputs (of the dataset stages: the eval stage is
    # the ise_eval DAG's to run and record).
    status = _dvc(project, "status", *STAGE_NAMES)
    assert status.returncode == 0 and "up to date" in status.stdout.lower(), status.stdout
