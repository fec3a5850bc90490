"""The ise_eval DAG: parsed on the ise_sft Asset, mapped per batch of tasks, run by dag.test()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ise_core.catalog import Catalog
from ise_core.evaluation.tasks import write_tasks
from ise_core.pipeline import load_settings
from tests.dags.airflow_env import REPO, airflow_project, run_dag_test, states, tiny_params
from tests.evaluation.conftest import input_task, sandbox_or_fail, written_tasks

DAG_FILE = REPO / "dags" / "ise_eval.py"


def test_the_dag_parses_scheduled_on_the_sft_asset() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["ise_eval"]
    (scheduled_on,) = dag.timetable.asset_condition.objects
    (published,) = bag.dags["ise_refresh"].get_task("gate_sft").outlets
    assert scheduled_on.name == published.name == "ise_sft"
    assert scheduled_on.uri == published.uri  # the Asset ise_refresh publishes
    assert set(dag.task_ids) == {"plan", "evaluate", "finish", "gate_eval"}
    assert type(dag.get_task("evaluate")).__name__.endswith("MappedOperator")
    assert [o.name for o in dag.get_task("gate_eval").outlets] == ["ise_eval"]
    assert dag.get_task("finish").upstream_task_ids == {"evaluate"}
    assert dag.get_task("evaluate").pool == "ise_llm"


@pytest.mark.slow
def test_dag_test_evaluates_every_task_and_gates_the_score(airflow_db: Path) -> None:
    sandbox_or_fail()
    project = airflow_project()
    params = tiny_params(
        project, eval={"k": 1, "tasks_per_batch": 1, "gate": {"max_score_drop": 0.0}}
    )
    settings = load_settings(params)
    tasks = [input_task(), *written_tasks(settings, 1)]
    write_tasks(Catalog.of(settings).eval_tasks, tasks)

    result, log = run_dag_test(params, conf={"model": "scripted"}, dag_file=DAG_FILE)
    assert result["state"] == "success", log[-6000:]
    by_task = states(result)
    assert by_task["evaluate"] == ["success", "success"]  # one mapped instance per task
    named = sorted(r["rendered_map_index"] for r in result["tis"] if r["task_id"] == "evaluate")
    assert named == sorted(t.id for t in tasks)
    metrics = json.loads(Catalog.of(settings).eval_run(settings.eval.run).metrics.read_text())
    assert metrics["agent"]["label"] == "scripted" and metrics["overall"]["n_tasks"] == 2

    # The careless program on the same tasks: its score drops, and with no margin the gate fails.
    result, log = run_dag_test(params, conf={"model": "scripted:careless"}, dag_file=DAG_FILE)
    by_task = states(result)
    assert by_task["finish"] == ["success"], log[-6000:]
    careless = json.loads(Catalog.of(settings).eval_run(settings.eval.run).metrics.read_text())
    assert careless["overall"]["score"] < metrics["overall"]["score"]
    assert by_task["gate_eval"] == ["failed"] and result["state"] == "failed"
    assert "score at most 0.0 below the previous run's" in log

    bad, log = run_dag_test(params, conf={"modle": "x"}, dag_file=DAG_FILE)
    assert states(bad)["plan"] == ["failed"] and "unknown key(s) modle" in log
