"""One episode through the real OpenAI-compatible client, against a loopback server that
plays both the user simulator and the agent over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ise_core.config import load_settings
from ise_core.records import Check
from ise_core.simulate.stage import collect_stage, episode_path, simulate_stage
from tests.fakes.openai_server import FakeOpenAIServer, Faults, completion, tool_call
from tests.simulate.helpers import REPO, local_sandbox_reason, make_intent, write_intents

pytestmark = pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")


def _is_user_simulator(request: dict[str, Any]) -> bool:
    system = (request.get("messages") or [{}])[0].get("content") or ""
    return "You are NOT an assistant" in system


def both_roles(request: dict[str, Any]) -> dict[str, Any]:
    messages = request["messages"]
    if _is_user_simulator(request):
        turns = sum(1 for m in messages if m["role"] == "assistant")
        if turns == 0:
            turn = {
                "completed": False,
                "query": "Put 'hello 42' in greetings/hi.txt please.",
                "reason": "opening",
                "is_success": None,
            }
        else:
            turn = {"completed": True, "query": "Thanks!", "reason": "done", "is_success": True}
        return completion(request, content=json.dumps(turn))
    assert {t["function"]["name"] for t in request["tools"]} >= {"exec", "write", "read"}
    last = messages[-1]
    if last["role"] == "user":
        args = json.dumps({"path": "greetings/hi.txt", "content": "hello 42\n"})
        return completion(request, tool_calls=[tool_call("write", args, "call_w")])
    if last["role"] == "tool" and last["tool_call_id"] == "call_w":
        args = json.dumps({"command": "cat greetings/hi.txt"})
        return completion(request, tool_calls=[tool_call("exec", args, "call_c")])
    return completion(request, content=f"Done; the file reads: {last['content'].strip()}")


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
    episode = json.loads(episode_path(settings, intent.id).read_text())
    roles = [m["role"] for m in episode["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    cat = episode["messages"][5]
    assert cat["name"] == "exec" and cat["content"] == "hello 42\n" and cat["success"] is True
    assert episode["final_output"] == "Done; the file reads: hello 42"
    assert episode["checks"][0]["passed"] is True
    assert all(episode["metadata"]["llm"][role] for role in ("user", "agent"))
    assert episode["metadata"]["token_usage"]["total_tokens"] > 0
    assert stats["requests"] >= 6  # 2 user turns + 3 agent steps + the retried 429
    collected = collect_stage(settings)
    assert collected["n_kept"] == 1 and collected["llm_usage"]["total_tokens"] > 0
