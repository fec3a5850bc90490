"""Determinism: `dvc repro`, `ise run` and the Airflow DAG build byte-identical datasets, and
a re-run against an OpenAI-compatible endpoint is served from the LLM cache, unchanged.

Timings live outside the hashed content (timing.json files and data/trajectories/timing/);
Great Expectations' gate results carry the time they ran and are compared by verdict.
`dvc repro` also runs the eval stage, a measurement beside the dataset that `ise run` and the
refresh DAG leave to `ise eval` and the ise_eval DAG: its run folder is not compared.
"""

from __future__ import annotations

import json

import pytest

from tests.dvc.conftest import Built
from tests.dvc.project import Project
from tests.dvc.reference import CacheReplay, ReferenceBuilds

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


def _dataset(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files without an eval run's (data/eval/<run>/...; the task set stays)."""
    return {
        name: body
        for name, body in files.items()
        if not (name.startswith("data/eval/") and name.count("/") > 2)
    }


def _compare(built: Built, other: Project) -> None:
    by_dvc, by_other = _dataset(built.project.produced_files()), _dataset(other.produced_files())
    for name in DATASET_FILES:
        assert by_dvc[name] == by_other[name], name
    # Everything else too, stats and episodes included; gate results by their verdict.
    assert _different(by_dvc, by_other, skip=(GATE_RESULT,)) == []
    assert _same_verdicts(by_dvc, by_other)


@pytest.mark.slow
def test_dvc_repro_and_ise_run_build_identical_datasets(
    built: Built, reference_builds: ReferenceBuilds
) -> None:
    cli = reference_builds.result("cli")
    assert cli.ok, cli.log[-4000:]
    _compare(built, cli.project)


@pytest.mark.slow
def test_the_dag_builds_the_same_dataset(built: Built, reference_builds: ReferenceBuilds) -> None:
    if reference_builds.dag_missing is not None:
        pytest.skip(reference_builds.dag_missing)
    from tests.dags.airflow_env import states

    dag = reference_builds.result("dag")
    assert dag.ok, (states(dag.result) if dag.result else None, dag.log[-6000:])
    _compare(built, dag.project)
    # The DAG ends by recording lineage (`dvc commit` of the dataset stages): they are then
    # clean for DVC; the eval stage waits for the ise_eval DAG.
    assert set(dag.project.dvc_json("status", "--json")) <= {"eval"}


@pytest.mark.slow
def test_openai_rerun_is_served_from_the_llm_cache(reference_builds: ReferenceBuilds) -> None:
    replay: CacheReplay = reference_builds.result("openai")
    # Every role went over HTTP: the writer once per intent, the user and agent per turn.
    n_intents = replay.project.params()["intents"]["count"]
    assert replay.calls["writer"] >= n_intents
    assert replay.calls["user"] > n_intents and replay.calls["agent"] > replay.calls["user"]
    assert replay.first_requests == sum(replay.calls.values())
    # The re-run, with the data folder deleted and only .cache/llm left, sent nothing.
    assert replay.replay_requests == 0

    first, second = replay.first, replay.second
    for name in DATASET_FILES:
        assert first[name] == second[name], name
    # Episodes, splits and the card too. stats.json files also count what the run itself did
    # (requests sent vs. cache hits, embeddings computed), so they are left out here.
    assert _different(first, second, skip=(GATE_RESULT, "stats.json")) == []
    assert _same_verdicts(first, second)
