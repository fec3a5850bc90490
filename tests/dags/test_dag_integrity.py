"""DagBag integrity of ise_refresh: imports cleanly, tags, retries, mapping, assets, parse cost."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.dags.airflow_env import DAG_FILE, REPO, subprocess_env, tiny_params

HEAVY_MODULES = ("torch", "sentence_transformers", "great_expectations", "openai", "dvc", "numpy")


@pytest.fixture(scope="module")
def bag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def dag(bag: Any) -> Any:
    return bag.dags["ise_refresh"]


def test_no_import_errors(bag: Any) -> None:
    assert bag.import_errors == {}
    assert "ise_refresh" in bag.dags


def test_tags_schedule_catchup_and_docs(dag: Any) -> None:
    assert set(dag.tags) >= {"ise", "dataset"}
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    # params.yaml's airflow.schedule (@weekly), as data intervals: a run builds the period
    # named by its interval's start.
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert dag.timetable.expression == "0 0 * * 0"
    assert "record_lineage" in dag.doc_md and "max_map_length" in dag.doc_md


def test_every_task_retries_with_backoff(dag: Any) -> None:
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        assert task.retry_exponential_backoff, task.task_id
        assert task.retry_delay.total_seconds() == 120, task.task_id


def test_task_order(dag: Any) -> None:
    order = [
        "write_out",
        "embed",
        "intents",
        "gate_intents",
        "plan_simulation",
        "simulate",
        "collect",
        "gate_trajectories",
        "export",
        "gate_sft",
        "record_lineage",
    ]
    assert {task.task_id for task in dag.tasks} == set(order)
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    assert dag.get_task("write_out").upstream_task_ids == set()


def test_embedding_is_mapped_over_shards(dag: Any) -> None:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    embed = dag.get_task("embed")
    assert isinstance(embed, MappedOperator)
    assert embed.upstream_task_ids == {"write_out"}
    import jinja2

    class _Task:
        op_kwargs: ClassVar[dict[str, Any]] = {"shard": {"start": 5000, "stop": 10000}}

    assert jinja2.Environment().from_string(embed.map_index_template).render(task=_Task()) == (
        "5000-10000"
    )
    # The writer calls the LLM in both halves of the stage (the eval split writes more).
    assert dag.get_task("write_out").pool == dag.get_task("intents").pool == "ise_llm"
    # With nothing to embed the mapping is skipped: intents still runs.
    assert dag.get_task("intents").trigger_rule == "none_failed"


def test_simulation_is_mapped_throttled_and_named(dag: Any) -> None:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    simulate = dag.get_task("simulate")
    assert isinstance(simulate, MappedOperator)
    assert simulate.pool == "ise_llm"
    # From the one concurrency plan: the scripted default runs 2 episodes per core.
    from ise_core import pipeline

    plan = pipeline.concurrency_plan(pipeline.load_settings(REPO / "params.yaml"))
    assert simulate.max_active_tis_per_dag == plan.active_tasks == plan.episodes
    # Named by the intent id(s): from the argument while running, then the task's own label.
    import jinja2

    assert simulate.map_index_template
    template = jinja2.Environment().from_string(simulate.map_index_template)

    class _Task:
        op_kwargs: ClassVar[dict[str, Any]] = {"intent_ids": ["it-1", "it-2"]}

    assert template.render(task=_Task()) == "it-1, it-2"
    assert template.render(task=_Task(), intent_label="it-1 … it-9 (9 intents)") == (
        "it-1 … it-9 (9 intents)"
    )
    assert dag.get_task("collect").trigger_rule == "none_failed"


def test_gates_publish_assets(dag: Any) -> None:
    expected = {
        "gate_intents": "data/intents/intents.jsonl",
        "gate_trajectories": "data/trajectories/trajectories.jsonl",
        "gate_sft": "data/sft/train.jsonl",
    }
    for task_id, suffix in expected.items():
        outlets = dag.get_task(task_id).outlets
        assert len(outlets) == 1, task_id
        assert outlets[0].uri == (REPO / suffix).as_uri()
        assert outlets[0].name.startswith("ise_")


# Parse in a fresh interpreter; airflow.sdk is imported first, as in a DAG processor that
# has it loaded already, so the time measured is what this file itself costs.
_PARSE_SCRIPT = r"""
import json, runpy, sys, time
import airflow.sdk
heavy = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
start = time.perf_counter()
namespace = runpy.run_path(sys.argv[1], run_name="ise_parse_probe")
elapsed = time.perf_counter() - start
dag = namespace["ise_refresh_dag"]
print(json.dumps({
    "seconds": elapsed,
    "preloaded": heavy,
    "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules and m not in heavy],
    "schedule": getattr(dag.timetable, "expression", str(dag.schedule)),
    "collect_rule": getattr(dag.get_task("collect").trigger_rule, "value", None),
    "retries": dag.get_task("simulate").retries,
    "pool": dag.get_task("simulate").pool,
    "roots": sorted(task.task_id for task in dag.roots),
    "after_estimate": sorted(dag.get_task("estimate").downstream_task_ids)
    if "estimate" in dag.task_ids else None,
}))
"""


def _parse(params: Path | None = None) -> dict[str, Any]:
    extra = {"ISE_PARAMS": str(params)} if params else {}
    done = subprocess.run(
        [sys.executable, "-c", _PARSE_SCRIPT, str(DAG_FILE), json.dumps(HEAVY_MODULES)],
        env=subprocess_env(**extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_parse_imports_nothing_heavy() -> None:
    # What keeps parsing cheap is what the file imports; the time itself is a benchmark's
    # figure (benchmarks/saturation_airflow.py), not a test's, on a shared machine.
    result = _parse()
    assert result["heavy"] == [], f"parsing imported {result['heavy']}"


def test_schedule_retries_pool_and_tolerance_come_from_params(tmp_path: Path) -> None:
    params = tiny_params(
        tmp_path,
        airflow={
            "schedule": "0 3 * * 1",
            "retries": 5,
            "pool": "llm_small",
            "tolerate_failed_share": 0.1,
        },
    )
    result = _parse(params)
    assert result["schedule"] == "0 3 * * 1"
    assert result["retries"] == 5
    assert result["pool"] == "llm_small"
    assert result["collect_rule"] == "all_done"
    assert result["roots"] == ["write_out"] and result["after_estimate"] is None


def test_an_estimate_pilot_adds_the_estimate_task_first(tmp_path: Path) -> None:
    result = _parse(tiny_params(tmp_path, airflow={"estimate_pilot": 5}))
    assert result["roots"] == ["estimate"]
    assert result["after_estimate"] == ["write_out"]


def test_bad_params_are_an_import_error_naming_the_key(tmp_path: Path) -> None:
    params = tiny_params(tmp_path, airflow={"retries": -1})
    done = subprocess.run(
        [sys.executable, "-c", _PARSE_SCRIPT, str(DAG_FILE), "[]"],
        env=subprocess_env(ISE_PARAMS=str(params)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "airflow.retries" in done.stderr
    assert str(params) in done.stderr
