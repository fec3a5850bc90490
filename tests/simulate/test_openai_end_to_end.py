"""One episode through the real OpenAI-compatible client, against a loopback server that
plays both the user simulator and the agent over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ise_core.catalog import EpisodeStore
from ise_core.config import load_settings
from ise_core.records import Check
from ise_core.simulate.stage import collect_stage, simulate_stage
from tests.fakes.both_roles import BothRoles
from tests.fakes.openai_server import FakeOpenAIServer, Faults
from tests.simulate.helpers import REPO, local_sandbox_reason, make_intent, write_intents

pytestmark = pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")


# One user turn: the agent writes greetings/hi.txt, reads it back, and answers.
both_roles = BothRoles()


def test_an_episode_runs_end_to_end_over_http(tmp_path: Path) -> None:
    # One rate-limited request on the way: the client's retry absorbs it.
    with FakeOpenAIServer(both_roles, faults=Faults(script=["rate_limit"])) as server:
        params = {
            "seed": 7,
            "llm": {
                "provider": "openai",
                "base_url": server.base_url,
                "model": "fake-model",
                "cache": "off",
                "backoff_base_s": 0.01,
                "backoff_max_s": 0.05,
            },
            "workspace": {
                "backend": "local",
                "root": str(tmp_path / "sandboxes"),
                "template": str(REPO / "ise_core/workspace/template"),
            },
        }
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
        settings = load_settings(tmp_path / "params.yaml")
        intent = make_intent(
            checks=[Check(kind="file_contains", path="greetings/hi.txt", text="hello 42")]
        )
        write_intents(settings, [intent])
        report = simulate_stage(settings, progress=False)
        stats = server.stats()
    assert (report.n_run, report.n_kept) == (1, 1)
    episode = json.loads(EpisodeStore.of(settings).path(intent.id).read_text())
    roles = [m["role"] for m in episode["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    cat = episode["messages"][5]
    assert cat["name"] == "exec" and cat["content"] == "hello 42\n" and cat["success"] is True
    assert episode["final_output"] == "Done; the file reads: hello 42"
    assert episode["checks"][0]["passed"] is True
    assert all(episode["metadata"]["llm"][role] for role in ("user", "agent"))
    assert episode["metadata"]["token_usage"]["total_tokens"] > 0
    assert episode["messages"][1]["content"] == intent.request  # simulate.first_turn: request
    # 1 user turn (the closing) + 3 agent steps + the retried 429
    assert stats["requests"] == both_roles.requests_per_episode + 1 == 5
    collected = collect_stage(settings)
    assert collected["n_kept"] == 1 and collected["llm_usage"]["total_tokens"] > 0
