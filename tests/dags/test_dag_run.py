"""``dag.test()`` of the whole ise_refresh DAG on tiny params (scripted LLM, local workspace).

Each run happens in a fresh interpreter (the DAG reads its params file when parsed) against
this session's SQLite metadata database.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ise_core.capacity import longest_first
from ise_core.records import Intent
from ise_core.stages import STAGE_NAMES
from tests.dags.airflow_env import (
    BIN,
    REPO,
    airflow_project,
    run_dag_test,
    states,
    subprocess_env,
    tiny_params,
)

pytestmark = pytest.mark.slow

DOWNSTREAM_OF_INTENTS = (
    "gate_intents",
    "plan_simulation",
    "simulate",
    "collect",
    "gate_trajectories",
    "export",
    "gate_sft",
    "record_lineage",
)
# Files that record when or how fast something ran, never what it produced.
RUN_RECORDS = {"timing.json"}


def _dvc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def _make_dvc_project(project: Path) -> None:
    """A DVC project whose stages are the repository's dvc.yaml stages, minus code deps
    (the code lives in the repository, not in this temp project)."""
    assert _dvc(project, "init", "--no-scm").returncode == 0
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    for stage in spec["stages"].values():
        deps = [d for d in stage.get("deps", []) if str(d).startswith("data/")]
        if deps:
            stage["deps"] = deps
        else:
            stage.pop("deps", None)
    (project / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def _produced_files(root: Path) -> dict[str, Path]:
    files = {}
    for path in sorted((root / "data").rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and path.name not in RUN_RECORDS and "/timing/" not in relative:
            files[relative] = path
    return files


def _same_content(left: Path, right: Path) -> bool:
    if left.name == "gate_result.json":  # Great Expectations stamps its load time inside
        keys = ("gate", "success", "failures")
        a, b = json.loads(left.read_bytes()), json.loads(right.read_bytes())
        return [a.get(k) for k in keys] == [b.get(k) for k in keys]
    return left.read_bytes() == right.read_bytes()


def test_whole_dag_matches_the_cli_one_instance_per_intent(
    airflow_db: Path, tmp_path: Path
) -> None:
    dag_project, cli_project = airflow_project(), tmp_path / "cli"
    dag_params, cli_params = tiny_params(dag_project), tiny_params(cli_project)
    _make_dvc_project(dag_project)
    # `ise run` on the same params, at the same time (same code, same machine).
    cli = subprocess.Popen(
        [str(BIN / "ise"), "run", "--params", str(cli_params)],
        cwd=cli_project,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        result, log = run_dag_test(dag_params)
        cli_log, _ = cli.communicate(timeout=400)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, cli_log[-4000:]
    assert result["state"] == "success", log[-6000:]
    by_task = states(result)
    assert all(s == ["success"] for t, s in by_task.items() if t != "simulate"), by_task

    # One mapped simulate instance per intent, named by its intent id, longest first.
    intents = [
        Intent.model_validate_json(line)
        for line in (dag_project / "data/intents/intents.jsonl").read_text().splitlines()
    ]
    ids = [intent.id for intent in longest_first(intents)]
    assert len(ids) == 3
    mapped = sorted(
        (row for row in result["tis"] if row["task_id"] == "simulate"),
        key=lambda row: row["map_index"],
    )
    assert [row["map_index"] for row in mapped] == [0, 1, 2]
    assert [row["state"] for row in mapped] == ["success"] * 3
    assert [row["rendered_map_index"] for row in mapped] == ids

    # The same files with the same bytes as the CLI's run.
    dag_files, cli_files = _produced_files(dag_project), _produced_files(cli_project)
    # In a DVC project the lineage step writes the (empty) refresh period list dvc.yaml reads.
    ledger = dag_files.pop("data/refresh/periods.json")
    assert json.loads(ledger.read_text(encoding="utf-8")) == {"periods": []}
    assert set(dag_files) == set(cli_files)
    assert {"data/sft/train.jsonl", "data/trajectories/trajectories.jsonl"} <= set(dag_files)
    different = [name for name in dag_files if not _same_content(dag_files[name], cli_files[name])]
    assert different == []

    # Lineage: dvc.lock records the outputs, so the dataset stages' dvc status is clean (the
    # eval stage is the ise_eval DAG's to run and record).
    assert "lineage: dvc commit recorded the stage outputs" in log
    assert (dag_project / "dvc.lock").is_file()
    status = _dvc(dag_project, "status", *STAGE_NAMES)
    assert status.returncode == 0 and "up to date" in status.stdout.lower(), status.stdout


def test_failing_gate_fails_its_task_and_nothing_downstream_runs(
    airflow_db: Path, tmp_path: Path
) -> None:
    # Retries are on: a failed gate must not be retried (a retry cannot change its verdict).
    params = tiny_params(
        airflow_project(),
        # Vendi of n intents is below n unless they are orthogonal: this cannot hold.
        gates={"intents": {"min_vendi_score": 1000.0, "min_vendi_share": 1.0}},
        airflow={"retries": 2, "retry_delay_s": 1},
    )
    result, log = run_dag_test(params)
    by_task = states(result)
    assert result["state"] == "failed"
    assert by_task["intents"] == ["success"]
    assert by_task["gate_intents"] == ["failed"]
    for task_id in DOWNSTREAM_OF_INTENTS[1:]:
        assert by_task[task_id] == ["upstream_failed"], (task_id, by_task)
    assert "gate intents failed" in log, log[-5000:]
    # The gate's readable report (which expectation, what was expected) is in the task's log.
    report = log.split("AirflowFailException: gate intents failed", 1)[-1]
    assert "FAILED" in report and "expected" in report
    assert not (params.parent / "data/trajectories").exists()


def test_bad_run_conf_fails_the_first_task_with_the_key(airflow_db: Path, tmp_path: Path) -> None:
    params = tiny_params(airflow_project())
    result, log = run_dag_test(params, conf={"intent_count": 0})
    by_task = states(result)
    assert result["state"] == "failed"
    assert by_task["write_out"] == ["failed"]
    for task_id in ("embed", "intents", *DOWNSTREAM_OF_INTENTS):
        assert by_task[task_id] == ["upstream_failed"], (task_id, by_task)
    assert "intents.count" in log
    assert "the run's conf was {'intent_count': 0}" in log
    assert not (params.parent / "data").exists()


def test_an_estimate_over_the_budget_fails_the_run_before_any_stage(
    airflow_db: Path, tmp_path: Path
) -> None:
    params = tiny_params(
        airflow_project(),
        airflow={"estimate_pilot": 2, "retries": 2, "retry_delay_s": 1},
        llm={"budget": {"tokens": 100}},
    )
    result, log = run_dag_test(params)
    by_task = states(result)
    assert result["state"] == "failed"
    assert by_task["estimate"] == ["failed"]  # not retried: a retry cannot change it
    for task_id in ("intents", *DOWNSTREAM_OF_INTENTS):
        assert by_task[task_id] == ["upstream_failed"], (task_id, by_task)
    assert "above llm.budget.tokens=100" in log, log[-5000:]
    assert "budget to set: llm.budget" in log  # the projection is in the task's log
    estimate = json.loads((params.parent / "data/estimate/estimate.json").read_text())
    assert estimate["pilot"]["episodes"] == 2
    assert estimate["simulate_to_spend"]["tokens"]["expected"] > 100
    assert not (params.parent / "data/intents/intents.jsonl").exists()
