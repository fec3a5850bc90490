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

from tests.dvc.conftest import Built
from tests.dvc.project import BIN, REPO, Project, run, sandbox_missing
from tests.dvc.scripted_endpoint import ScriptedEndpoint
from tests.fakes.openai_server import FakeOpenAIServer

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


@pytest.mark.slow
def test_openai_rerun_is_served_from_the_llm_cache(
    tmp_path: Path, timings: dict[str, float]
) -> None:
    reason = sandbox_missing()
    if reason is not None:
        pytest.skip(f"no local sandbox: {reason}")
    root = tmp_path / "project"
    endpoint = ScriptedEndpoint(root / "params.yaml")
    with FakeOpenAIServer(endpoint) as server:
        llm = {
            "provider": "openai",
            "base_url": server.base_url,
            "model": "fake-model",
            "max_retries": 1,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.05,
        }
        project = Project.create(root, {"llm": llm}, timings=timings)
        project.timed("ise run, OpenAI-compatible endpoint", "ise", "run")
        # Every role went over HTTP: the writer once per intent, the user and agent per turn.
        n_intents = project.params()["intents"]["count"]
        assert endpoint.calls["writer"] >= n_intents
        assert endpoint.calls["user"] > n_intents
        assert endpoint.calls["agent"] > endpoint.calls["user"]
        assert server.requests == sum(endpoint.calls.values())
        first = project.produced_files()

        # Re-run with nothing but the LLM cache (.cache/llm): the data folder is gone.
        shutil.rmtree(root / "data")
        server.reset()
        project.timed("ise run, OpenAI endpoint, from the LLM cache", "ise", "run")
        assert server.requests == 0
    second = project.produced_files()

    for name in DATASET_FILES:
        assert first[name] == second[name], name
    # Episodes, splits and the card too. stats.json files also count what the run itself did
    # (requests sent vs. cache hits, embeddings computed), so they are left out here.
    assert _different(first, second, skip=(GATE_RESULT, "stats.json")) == []
    assert _same_verdicts(first, second)
