"""The loopback responder the saturation benchmarks use: multi-turn episodes over HTTP whose
request count is known in advance and whose requests differ between episodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ise_core.catalog import EpisodeStore
from ise_core.config import settings_from_dict
from ise_core.records import Check
from ise_core.simulate.stage import collect_stage, simulate_stage
from tests.fakes.both_roles import BothRoles
from tests.fakes.openai_server import FakeOpenAIServer
from tests.simulate.helpers import REPO, local_sandbox_reason, make_intent, write_intents

pytestmark = pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")


def test_three_turn_episodes_cost_exactly_the_announced_requests(tmp_path: Path) -> None:
    responder = BothRoles(user_turns=3, tool_calls_per_turn=2, tag_episodes=True)
    assert responder.requests_per_episode == 3 + 3 * 3
    with FakeOpenAIServer(responder) as server:
        settings = settings_from_dict(
            {
                "seed": 7,
                "llm": {
                    "provider": "openai",
                    "base_url": server.base_url,
                    "model": "fake-model",
                    "cache": "read_write",
                    "cache_dir": str(tmp_path / "llm-cache"),
                },
                "workspace": {
                    "backend": "local",
                    "root": str(tmp_path / "sandboxes"),
                    "template": str(REPO / "ise_core/workspace/template"),
                },
                "simulate": {"concurrency": 2},
            },
            "test params",
            base_dir=tmp_path,
        )
        check = Check(kind="file_contains", path="greetings/hi3.txt", text="hello 43")
        intents = [
            make_intent("it-000001", checks=[check], style="terse"),
            make_intent("it-000002", checks=[check], style="chatty and warm"),
        ]
        # The opening is each intent's request: different requests, different agent requests.
        intents[1] = intents[1].model_copy(update={"request": "Some greeting files, please."})
        write_intents(settings, intents)
        report = simulate_stage(settings, progress=False)
        served = server.stats()
    assert (report.n_run, report.n_kept) == (2, 2)
    # Tagged episodes never share an agent request, so the cache answers none of them.
    assert served["requests"] == 2 * responder.requests_per_episode
    episode = json.loads(EpisodeStore.of(settings).path("it-000001").read_text())
    assert episode["metadata"]["user_turns"] == 3
    assert episode["metadata"]["tool_calls"] == 6
    assert episode["checks"][0]["passed"] is True
    assert episode["final_output"].startswith("Done; the file reads: hello 43 ")
    stats = collect_stage(settings)
    assert stats["llm_usage"]["requests"] == served["requests"]
    assert stats["llm_usage"]["cache_hits"] == 0
