"""A backfill of three past weeks through the real scheduler (Airflow 3), driven over REST.

The scheduler, dag-processor and API server run on 127.0.0.1 (LocalExecutor, scripted LLM,
grow mode, @weekly, catchup off). The backfill is created as a user would: ``POST
/api/v2/backfills``, the call the UI's backfill form makes, authenticated like every other
REST call, where ``airflow backfill create`` would write to the metadata database directly
(so needs its credentials). Its settings are the ones this DAG needs:

- ``max_active_runs: 1``: a backfill's runs count against the backfill's own limit (default
  10), not the DAG's ``max_active_runs=1``, and periods build on each other in shared folders;
- ``reprocess_behavior: failed``: a period whose run failed is resumed, one that succeeded is
  left as it is (nothing has run in this range, so all three runs are new).

Airflow 3 starts backfill runs only while the DAG is unpaused, and unpausing a scheduled DAG
makes the scheduler run its latest interval (catchup off). So the three weeks are the latest
three, and the backfill is created while the DAG is still paused: when it is unpaused, the
latest interval's run already exists (the backfill's last) and the scheduler adds none.

Then: three backfill runs, one after another in period order; exactly three periods in the
ledger and the history, each holding exactly its batch; and the intents, trajectories, SFT
files and history facts ``ise refresh --period`` builds over the three periods in order.
Last, the same weeks backfilled again at Airflow's default max_active_runs: the runs started
together fail at their first task and leave every file as it was.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from ise_core.config import deep_merge
from ise_core.refresh.periods import Ledger
from tests.dags.airflow_env import airflow_project, tiny_params
from tests.dags.periods import (
    BASE,
    PER_PERIOD,
    REFRESH,
    batch,
    built_in_order,
    check_same_dataset,
    lines,
    period_index,
    snapshot,
)
from tests.dags.rest import DAG_ID, Api, failure_report, wait_for
from tests.dags.services import PASSWORD, airflow_services, wait_for_parse
from tests.dags.test_dag_run import _make_dvc_project

pytestmark = pytest.mark.slow

# Only this test's params name this pool, so it marks the DAG version parsed here.
POOL = "ise_backfill_llm"
RUN_TIMEOUT_S = 420  # one tiny run under a loaded machine (the e2e test's bound)


def _latest_weeks(now: datetime, count: int = 3) -> list[datetime]:
    """The starts of the last ``count`` whole @weekly intervals (Sunday to Sunday) before
    ``now``, oldest first."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last_sunday = today - timedelta(days=(today.weekday() + 1) % 7)
    return [last_sunday - timedelta(weeks=count - k) for k in range(count)]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _runs_since(api: Api, start: datetime) -> list[dict[str, Any]]:
    """Every run of the DAG with a logical date from ``start`` on, by logical date."""
    query = f"?limit=100&order_by=logical_date&logical_date_gte={quote(_iso(start))}"
    status, body = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns{query}")
    assert status == 200, body
    runs: list[dict[str, Any]] = body["dag_runs"]
    return runs


def _backfill(api: Api, weeks: list[datetime], **settings: Any) -> int:
    """Create a backfill over ``weeks`` with ``settings`` (max_active_runs, reprocess_behavior
    ...); returns its id once the dry run has planned exactly ``weeks``."""
    body = {"dag_id": DAG_ID, "from_date": _iso(weeks[0]), "to_date": _iso(weeks[-1]), **settings}
    status, dry = api.call("POST", "/api/v2/backfills/dry_run", body)
    assert status == 200, dry
    planned = [row["logical_date"] for row in dry["backfills"]]
    assert [_moment(moment) for moment in planned] == weeks, planned
    status, created = api.call("POST", "/api/v2/backfills", body)
    assert status == 200, created
    assert created["completed_at"] is None, created
    backfill_id: int = created["id"]
    return backfill_id


def _wait_for_runs(api: Api, weeks: list[datetime], logs: Path) -> list[dict[str, Any]]:
    """The backfill's runs once all have succeeded; fails with the task logs of the first
    that failed, or after a bound of RUN_TIMEOUT_S per run with the services' logs."""

    def done() -> list[dict[str, Any]] | None:
        runs = _runs_since(api, weeks[0])
        failed = [run for run in runs if run["state"] == "failed"]
        if failed:
            raise AssertionError(failure_report(api, failed[0]["dag_run_id"]))
        finished = len(runs) >= len(weeks) and all(run["state"] == "success" for run in runs)
        return runs if finished else None

    runs: list[dict[str, Any]] = wait_for(
        "the backfill's runs", done, RUN_TIMEOUT_S * len(weeks), logs
    )
    return runs


def _wait_for_completion(api: Api, backfill_id: int, timeout: float, logs: Path) -> None:
    def completed() -> bool:
        status, backfill = api.call("GET", f"/api/v2/backfills/{backfill_id}")
        return status == 200 and backfill["completed_at"] is not None

    wait_for(f"backfill {backfill_id} to be marked complete", completed, timeout, logs)


def _concurrent_runs_fail_first(api: Api, project: Path, weeks: list[datetime], logs: Path) -> None:
    """A backfill left at Airflow's default max_active_runs (10) starts its runs at once: each
    run that finds another running fails at its first task, having written nothing. The
    backfill reprocesses the weeks already built, so a run the timing lets through alone
    changes no byte either."""
    before = snapshot(project)
    backfill_id = _backfill(api, weeks, reprocess_behavior="completed")
    _wait_for_completion(api, backfill_id, RUN_TIMEOUT_S * len(weeks), logs)
    failed = [run for run in _runs_since(api, weeks[0]) if run["state"] == "failed"]
    assert len(failed) >= 2, _runs_since(api, weeks[0])
    for run in failed:
        run_id = run["dag_run_id"]
        status, body = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
        assert status == 200, body
        tis = {ti["task_id"]: ti for ti in body["task_instances"] if ti["map_index"] < 0}
        first = tis.pop("write_out")
        assert first["state"] == "failed", failure_report(api, run_id)
        assert {ti["state"] for ti in tis.values()} == {"upstream_failed"}, tis
        # The runs are the first backfill's, cleared: this is write_out's second try.
        path = f"taskInstances/write_out/logs/{first['try_number']}"
        _, log = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/{path}")
        assert "must run one at a time" in json.dumps(log), json.dumps(log)[-3000:]
    assert snapshot(project) == before


def _check_periods_hold_their_batches(root: Path, periods: list[str]) -> None:
    """The base and each period's batch, nothing else; one episode per intent, stamped with
    the period that added it."""
    by_period: dict[str | None, list[int]] = {}
    for line in lines(root, "data/intents/intents.jsonl"):
        row = json.loads(line)
        by_period.setdefault(row.get("period"), []).append(row["index"])
    assert {key: sorted(value) for key, value in by_period.items()} == {
        None: list(range(BASE)),
        **{period: batch(period) for period in periods},
    }
    episodes = Counter(
        json.loads(data)["metadata"].get("period")
        for name, data in snapshot(root).items()
        if name.startswith("data/trajectories/episodes/")
    )
    assert episodes == {None: BASE, **{period: PER_PERIOD for period in periods}}


def _backfill_with_the_dag_paused_first(
    api: Api, weeks: list[datetime], logs: Path
) -> list[dict[str, Any]]:
    """Create the backfill while the DAG is paused, unpause it, and wait for the backfill to
    complete; returns its runs."""
    api.login(PASSWORD)
    wait_for_parse(api, POOL, logs)
    status, dag = api.call("GET", f"/api/v2/dags/{DAG_ID}")
    assert status == 200 and dag["is_paused"] is True, dag
    assert _runs_since(api, weeks[0]) == []

    backfill_id = _backfill(api, weeks, max_active_runs=1, reprocess_behavior="failed")
    status, dag = api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    assert status == 200 and dag["is_paused"] is False, dag
    runs = _wait_for_runs(api, weeks, logs)

    _wait_for_completion(api, backfill_id, 120, logs)
    # Still only the backfill's runs: unpausing added no run of the latest interval.
    assert [run["dag_run_id"] for run in _runs_since(api, weeks[0])] == [
        run["dag_run_id"] for run in runs
    ]
    return runs


def test_backfill_of_three_past_weeks_builds_them_in_order(
    airflow_db: Path, tmp_path: Path
) -> None:
    weeks = _latest_weeks(datetime.now(UTC))
    periods = [week.strftime("%Y-%m-%d") for week in weeks]
    project = airflow_project()
    params = tiny_params(project, **deep_merge(REFRESH, {"airflow": {"pool": POOL}}))
    _make_dvc_project(project)

    with built_in_order(tmp_path / "in_order", periods) as wait_in_order:
        with airflow_services(project, params, tmp_path) as (api, logs):
            runs = _backfill_with_the_dag_paused_first(api, weeks, logs)
            _concurrent_runs_fail_first(api, project, weeks, logs)
        wait_in_order()

    # Exactly the backfill's three runs (the scheduler added none), one after another in
    # period order, each on its week's data interval.
    assert [run["run_type"] for run in runs] == ["backfill"] * 3, runs
    assert [_moment(run["data_interval_start"]) for run in runs] == weeks, runs
    for earlier, later in itertools.pairwise(runs):
        assert _moment(later["start_date"]) >= _moment(earlier["end_date"]), (earlier, later)

    ledger = Ledger.load(project / "data/refresh/periods.json")
    assert [entry.period for entry in ledger.entries] == periods
    assert [entry.index for entry in ledger.entries] == [period_index(p) for p in periods]
    history = [json.loads(line) for line in lines(project, "data/refresh/history.jsonl")]
    assert [h["period"] for h in history] == periods  # recorded in period order
    assert [h["intents_added"] for h in history] == [PER_PERIOD] * 3
    assert [h["batch"]["first"] for h in history] == [batch(p)[0] for p in periods]
    _check_periods_hold_their_batches(project, periods)
    check_same_dataset(project, tmp_path / "in_order")
