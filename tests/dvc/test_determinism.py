"""Determinism: `dvc repro`, `ise run` and the Airflow DAG build byte-identical datasets, and
a re-run against an OpenAI-compatible endpoint is served from the LLM cache, unchanged.

Timings live outside the hashed content (timing.json files and data/trajectories/timing/);
Great Expectations' gate results carry the time they ran and are compared by verdict.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.dvc.conftest import Built, OpenAIBuilt
from tests.dvc.project import BIN, REPO, STAGES, Project, ran_stages, run

DATASET_FILES = (
    "data/intents/intents.jsonl",
    "data/trajectories/trajectories.jsonl",
    "data/sft/train.jsonl",
)
GATE_RESULT = "gate_result.json"


def _different(
    left: dict[str, bytes], right: dict[str, bytes], *, skip: tuple[str, ...]
) -> list[str]:
    names = sorted(set(left) | set(right))
    return [name for name in names if not name.endswith(skip) and left.get(name) != right.get(name)]


def _same_verdicts(left: dict[str, bytes], right: dict[str, bytes]) -> bool:
    def verdicts(files: dict[str, bytes]) -> dict[str, object]:
        return {
            name: json.loads(body).get("success")
            for name, body in files.items()
            if name.endswith(GATE_RESULT)
        }

    return verdicts(left) == verdicts(right) and all(verdicts(left).values())


def _airflow_ready() -> str | None:
    if not (REPO / "dags" / "ise_refresh.py").is_file():
        return "no DAG file dags/ise_refresh.py"
    if importlib.util.find_spec("airflow") is None:
        return "Airflow is not installed"
    return None


def _migrate_airflow_db() -> None:
    """The DAG tests' private AIRFLOW_HOME, migrated once per session."""
    from tests.dags.airflow_env import AIRFLOW_HOME, subprocess_env

    marker = AIRFLOW_HOME / ".migrated"
    if not marker.exists():
        run([BIN / "airflow", "db", "migrate"], AIRFLOW_HOME, subprocess_env(), timeout=300)
        marker.touch()


@pytest.mark.slow
def test_dvc_repro_ise_run_and_the_dag_build_identical_datasets(
    built: Built, tmp_path: Path, timings: dict[str, float]
) -> None:
    reason = _airflow_ready()
    if reason is not None:
        pytest.skip(reason)
    from tests.dags.airflow_env import run_dag_test, states

    cli = Project.create(tmp_path / "cli", timings=timings)
    dag = Project.create(tmp_path / "dag", timings=timings)
    _migrate_airflow_db()

    # `ise run` and dag.test() side by side on the same params (same code, same machine).
    started = time.monotonic()
    process = subprocess.Popen(
        [str(BIN / "ise"), "run"],
        cwd=cli.root,
        env=cli.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        result, log = run_dag_test(dag.root / "params.yaml")
        timings["dag.test(), fresh copy (beside ise run)"] = round(time.monotonic() - started, 1)
        cli_log, _ = process.communicate(timeout=600)
        timings["ise run, fresh copy (beside dag.test())"] = round(time.monotonic() - started, 1)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, cli_log[-4000:]
    assert result["state"] == "success", (states(result), log[-6000:])

    by_dvc = built.project.produced_files()
    by_cli = cli.produced_files()
    by_dag = dag.produced_files()
    for name in DATASET_FILES:
        assert by_dvc[name] == by_cli[name] == by_dag[name], name
    # Everything else too, stats and episodes included; gate results by their verdict.
    assert _different(by_dvc, by_cli, skip=(GATE_RESULT,)) == []
    assert _different(by_dvc, by_dag, skip=(GATE_RESULT,)) == []
    assert _same_verdicts(by_dvc, by_cli) and _same_verdicts(by_dvc, by_dag)

    # The DAG ends by recording lineage (`dvc commit`): its copy is then clean for DVC.
    assert dag.dvc_json("status", "--json") == {}


def test_openai_rerun_is_served_from_the_llm_cache(
    openai_built: OpenAIBuilt, timings: dict[str, float]
) -> None:
    project, server, endpoint = openai_built.project, openai_built.server, openai_built.endpoint
    assert ran_stages(openai_built.output) == list(STAGES)
    # Every role went over HTTP: the writer once per intent, the user and agent per turn.
    n_intents = project.params()["intents"]["count"]
    assert endpoint.calls["writer"] >= n_intents
    assert endpoint.calls["user"] > n_intents and endpoint.calls["agent"] > endpoint.calls["user"]
    first_requests = server.requests
    assert first_requests == sum(endpoint.calls.values())
    first = project.produced_files()

    # Re-run from nothing but the LLM cache (.cache/llm): the data folder is gone.
    shutil.rmtree(project.root / "data")
    server.reset()
    project.timed("ise run, OpenAI endpoint, from the LLM cache", "ise", "run")
    assert server.requests == 0
    second = project.produced_files()

    for name in DATASET_FILES:
        assert first[name] == second[name], name
    # Episodes, splits and the card too. stats.json files count what the run itself did
    # (requests sent vs. cache hits, embeddings computed), so they are compared apart.
    assert _different(first, second, skip=(GATE_RESULT, "stats.json")) == []
    assert _same_verdicts(first, second)
