"""What runs when: longest episodes start first, and an episode's sandbox, tools and file
writes never hold a request slot (the endpoint's slots serve only requests on the wire)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from ise_core.capacity import expected_turns, longest_first
from ise_core.catalog import EpisodeStore
from ise_core.config import Settings, load_settings
from ise_core.llm.limits import EndpointLimiter, process_limiters
from ise_core.records import Check, Trajectory
from ise_core.simulate.stage import simulate_stage
from ise_core.workspace import open_workspace
from tests.fakes.both_roles import BothRoles
from tests.fakes.openai_server import FakeOpenAIServer
from tests.simulate.helpers import REPO, local_sandbox_reason, make_intent, write_intents


def test_longest_first_orders_by_the_turns_an_intent_implies() -> None:
    short = make_intent("short").model_copy(update={"hidden_details": ["a"]})
    long = make_intent("long").model_copy(update={"hidden_details": ["a", "b", "c", "d"]})
    medium = make_intent("medium").model_copy(update={"hidden_details": ["a", "b"]})
    tie = make_intent("tie").model_copy(update={"hidden_details": ["x", "y"]})
    assert expected_turns(long) == 6
    ordered = longest_first([short, medium, long, tie])
    assert [i.id for i in ordered] == ["long", "medium", "tie", "short"]  # ties keep order
    simple = medium.model_copy(update={"id": "simple", "complexity": "simple"})
    complex_ = medium.model_copy(update={"id": "complex", "complexity": "complex"})
    assert [i.id for i in longest_first([simple, complex_])] == ["complex", "simple"]


class _Watched:
    """A workspace that records how many requests its process had in flight at each call."""

    def __init__(self, inner: Any, seen: dict[str, list[int]]) -> None:
        self.inner = inner
        self.seen = seen

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name not in ("open", "call", "run_check", "close", "list_files"):
            return attribute

        def watched(*args: Any, **kwargs: Any) -> Any:
            self.seen.setdefault(name, []).append(_in_flight())
            return attribute(*args, **kwargs)

        return watched


def _in_flight() -> int:
    return sum(limiter.in_flight for limiter in process_limiters())


def _loopback_settings(tmp_path: Path, base_url: str, max_concurrency: int) -> Settings:
    params = {
        "seed": 7,
        "llm": {"provider": "openai", "base_url": base_url, "model": "fake-model",
                "cache": "off", "max_concurrency": max_concurrency},
        "simulate": {"require_checks": False},
        "workspace": {"backend": "local", "root": str(tmp_path / "sandboxes"),
                      "template": str(REPO / "ise_core/workspace/template")},
    }  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return load_settings(tmp_path / "params.yaml")


@pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")
def test_sandbox_tools_and_writes_hold_no_request_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, list[int]] = {}
    save = EpisodeStore.save

    def watched_save(self: EpisodeStore, trajectory: Trajectory, timing: Any) -> Any:
        seen.setdefault("save", []).append(_in_flight())
        return save(self, trajectory, timing)

    monkeypatch.setattr(EpisodeStore, "save", watched_save)
    with FakeOpenAIServer(BothRoles(user_turns=2), latency_s=0.05) as server:
        settings = _loopback_settings(tmp_path, server.base_url, 1)
        intent = make_intent(checks=[Check(kind="file_exists", path="greetings/hi.txt")])
        write_intents(settings, [intent])

        def workspace_for(session_id: str) -> Any:
            inner = open_workspace(settings.workspace, base_dir=tmp_path, session_id=session_id)
            return _Watched(inner, seen)

        report = simulate_stage(settings, progress=False, workspace_factory=workspace_for)
        served = server.stats()
    assert report.n_run == 1 and served["requests"] >= 6
    # The default: twice the endpoint's slots, and the summary says why.
    assert report.episodes_at_once == 2
    assert "2 at once (2 x llm.max_concurrency)" in report.summary()
    limiters = [lim for lim in process_limiters() if isinstance(lim, EndpointLimiter)]
    assert any(lim.started >= 6 for lim in limiters)  # the requests did go through a slot
    for step in ("open", "call", "run_check", "close", "save"):
        counts: Sequence[int] = seen.get(step, [])
        assert counts, f"{step} was never called"
        assert set(counts) == {0}, f"{step} ran while a request slot was held: {counts}"
