"""One plan for how much runs at once: simulate's episodes, the DAG's tasks and pool."""

from __future__ import annotations

from typing import Any

import pytest

from ise_core import capacity
from ise_core.capacity import concurrency_plan, episodes_in_flight, machine_sandboxes
from ise_core.config import Settings, deep_merge, settings_from_dict

ENDPOINT: dict[str, Any] = {
    "llm": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
}


def _settings(*blocks: dict[str, Any]) -> Settings:
    merged: dict[str, Any] = {}
    for block in blocks:
        merged = deep_merge(merged, block)
    return settings_from_dict(merged, "params.yaml")


@pytest.fixture
def roomy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with room for 500 sandboxes."""
    monkeypatch.setattr(capacity, "_available_memory_mib", lambda: 500 * 128 * 2)
    monkeypatch.setattr(capacity, "_available_pids", lambda: 32 * 10_000)


@pytest.mark.usefixtures("roomy")
def test_a_model_backed_run_keeps_twice_the_endpoints_slots_in_flight() -> None:
    settings = _settings(ENDPOINT, {"llm": {"max_concurrency": 16}})
    assert episodes_in_flight(settings) == (32, "2 x llm.max_concurrency")
    assert episodes_in_flight(settings, 5) == (5, "--concurrency")
    explicit = _settings(ENDPOINT, {"simulate": {"concurrency": 7}})
    assert episodes_in_flight(explicit) == (7, "simulate.concurrency")
    # One role on an endpoint is enough to make the run model-backed.
    agent_only = _settings({"llm": {"roles": {"agent": dict(ENDPOINT["llm"])}}})
    assert episodes_in_flight(agent_only)[0] == 32


@pytest.mark.usefixtures("roomy")
def test_the_scripted_programs_run_two_episodes_per_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(capacity, "available_cores", lambda: 3)
    assert episodes_in_flight(_settings()) == (6, "2 per core (scripted)")


def test_the_machine_bounds_the_episodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capacity, "_available_memory_mib", lambda: 2560)  # 10 sandboxes' worth
    monkeypatch.setattr(capacity, "_available_pids", lambda: 32 * 1000)
    settings = _settings(ENDPOINT, {"llm": {"max_concurrency": 16}})
    count, why = episodes_in_flight(settings)
    assert count == 10 and why == "2 x llm.max_concurrency = 32, bounded by free memory (2560 MiB)"
    monkeypatch.setattr(capacity, "_available_pids", lambda: 32 * 4)
    assert episodes_in_flight(settings)[0] == 4
    # Set, the workspace's own number is taken as it is.
    told = _settings(ENDPOINT, {"workspace": {"max_sandboxes": 20}})
    assert machine_sandboxes(told.workspace) == (20, "workspace.max_sandboxes")
    assert episodes_in_flight(told)[0] == 20


def test_the_machine_is_read_from_this_host() -> None:
    count, why = machine_sandboxes(_settings().workspace)
    assert count >= 1 and why


@pytest.mark.usefixtures("roomy")
def test_the_dag_derives_its_tasks_and_pool_from_the_same_numbers() -> None:
    shared = {"llm": {"limiter": "redis://127.0.0.1:9/0", "max_concurrency": 16}}
    plan = concurrency_plan(_settings(ENDPOINT, shared))
    assert (plan.episodes, plan.per_task, plan.active_tasks, plan.pool_slots) == (32, 1, 32, 32)
    batched = concurrency_plan(_settings(ENDPOINT, shared, {"simulate": {"intents_per_task": 5}}))
    assert (batched.per_task, batched.active_tasks) == (5, 7)  # 7 tasks of 5 hold 32 and more
    # Each task process has its own limiter: never more tasks than the endpoint's slots.
    own = concurrency_plan(_settings(ENDPOINT, {"llm": {"max_concurrency": 16}}))
    assert (own.episodes, own.active_tasks, own.pool_slots) == (32, 16, 16)
    own_batched = concurrency_plan(
        _settings(ENDPOINT, {"llm": {"max_concurrency": 16}, "simulate": {"intents_per_task": 5}})
    )
    assert own_batched.active_tasks == 3  # 3 x 5 episodes, at most 15 requests
    told = concurrency_plan(
        _settings(ENDPOINT, {"airflow": {"max_active_tis_per_dag": 3, "pool_size": 9}})
    )
    assert (told.active_tasks, told.pool_slots) == (3, 9)
