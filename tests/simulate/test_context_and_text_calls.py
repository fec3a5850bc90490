"""Episodes on the OpenAI-compatible client (a loopback server as the agent): tool calls the
model wrote as text, requests compacted to fit the context window, and the overflow that
compaction cannot cure. What the model was sent is compared with what the export rebuilds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from ise_core.config import Settings
from ise_core.export.formats import to_openai_records
from ise_core.llm.context import apply_cuts
from ise_core.llm.openai_chat import OpenAIChat
from ise_core.quality.sft_gate import SFTLine, role_order_problem
from ise_core.records import Check, Trajectory
from ise_core.simulate.episode import run_episode
from ise_core.simulate.metrics import trajectory_stats
from ise_core.workspace import open_workspace
from tests.fakes import FakeOpenAIServer, Reply, completion, tool_call
from tests.simulate.helpers import (
    FakeChat,
    local_sandbox_reason,
    make_intent,
    make_settings,
    turn_json,
)

pytestmark = pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")

BIG = "python3 -c \"print('x' * 12000)\""  # a 12,000-character tool output


def _run(tmp_path: Path, responder: Any, window: int, settings: Settings | None = None) -> Any:
    settings = settings or make_settings(tmp_path, first_turn="request")
    intent = make_intent(checks=[Check(kind="command_succeeds", command="true")])
    user = FakeChat([turn_json("thanks", True, True)], name="user")
    with FakeOpenAIServer(responder) as server:
        agent = OpenAIChat("agent", model="m", base_url=server.base_url, context_window=window,
                           sampling={"max_tokens": 64})  # fmt: skip
        workspace = open_workspace(settings.workspace, base_dir=tmp_path)
        try:
            result = asyncio.run(
                run_episode(
                    intent, user=user, agent=agent, workspace=workspace, settings=settings.simulate
                )
            )
        finally:
            workspace.close()
        bodies = list(server.bodies)
    return result.trajectory, bodies


def _big_outputs(count: int) -> Any:
    """An agent that prints ``count`` big outputs, one call per step, then answers."""

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        done = sum(1 for m in request["messages"] if m["role"] == "tool")
        if done < count:
            args = json.dumps({"command": BIG})
            return completion(request, tool_calls=[tool_call("exec", args, f"call_{done}")])
        return completion(request, content="Printed them all.")

    return respond


def test_compacted_requests_are_recorded_and_the_export_rebuilds_what_was_sent(
    tmp_path: Path,
) -> None:
    trajectory, bodies = _run(tmp_path, _big_outputs(4), window=9000)
    meta = trajectory.metadata
    assert trajectory.kept and meta["compactions"] >= 2
    # The episode file keeps every output whole.
    outputs = [m.content or "" for m in trajectory.messages if m.role == "tool"]
    assert len(outputs) == 4 and all(len(o) >= 12000 for o in outputs)
    # Per compacted reply: its position and the outputs cut; rebuilt, they are what was sent.
    views = {v["reply"]: v["cut"] for v in meta["compacted_context"]}
    replies = [i for i, m in enumerate(trajectory.messages) if m.role == "assistant"]
    assert len(bodies) == len(replies) and set(views) <= set(replies)
    for body, reply in zip(bodies, replies, strict=True):
        rebuilt = apply_cuts(trajectory.messages[:reply], views.get(reply, []))
        assert [m["content"] for m in body["messages"]] == [m.content for m in rebuilt]
    # The export: one line per context the replies saw, each reply trained once, in its own.
    records = to_openai_records(trajectory)
    assert len(records) == len({tuple(views.get(r, [])) for r in replies}) >= 2
    trained: list[int] = []
    for record in records:
        SFTLine.model_validate(record)
        assert role_order_problem(record["messages"]) == ""
        part = record["metadata"]["context_part"]
        for position, message in enumerate(record["messages"]):
            if message["role"] == "assistant" and "weight" not in message:
                trained.append(position)
                sent = bodies[replies.index(position)]["messages"]
                assert [m["content"] for m in record["messages"][:position]] == [
                    m["content"] for m in sent
                ]
                assert views.get(position, []) == part["cut"]
    assert trained == replies
    assert records[-1]["messages"][-1]["content"] == "Printed them all."
    # export.context: full: one line, the full record.
    (full,) = to_openai_records(trajectory, context="full")
    assert "context_part" not in full["metadata"]
    assert [m["content"] for m in full["messages"]] == [m.content for m in trajectory.messages]
    stats = trajectory_stats([trajectory], fp="x")
    assert stats["compactions"] == {"total": meta["compactions"], "episodes": 1, "kept_episodes": 1}


def test_an_overflow_compaction_cannot_cure_ends_the_episode_with_its_stop_reason(
    tmp_path: Path,
) -> None:
    def respond(request: dict[str, Any]) -> Any:
        if len(json.dumps(request["messages"])) > 12_500:
            message = "the request exceeds the available context size (4096 tokens)"
            return Reply(400, {"error": {"code": 400, "message": message}})
        return _big_outputs(3)(request)

    # The server's window is smaller than one output: the newest output alone overflows.
    trajectory, _ = _run(tmp_path, respond, window=32_000)
    assert trajectory.stop_reason == "context_overflow"
    assert trajectory.status == "rejected" and not trajectory.kept
    assert "context size" in trajectory.metadata["error"]
    # What the turn did before the overflow is kept: the call and its output.
    assert [m.role for m in trajectory.messages] == ["system", "user", "assistant", "tool"]
    assert trajectory.checks and trajectory.checks[0].passed  # checks still ran


def test_calls_written_as_text_are_stored_as_tool_calls_and_counted(tmp_path: Path) -> None:
    def respond(request: dict[str, Any]) -> dict[str, Any]:
        if request["messages"][-1]["role"] == "tool":
            return completion(request, content="The file is written.")
        call = {"name": "write", "arguments": {"path": "notes.txt", "content": "hi\n"}}
        return completion(request, content=f"Sure.\n```json\n{json.dumps(call)}\n```")

    trajectory, _ = _run(tmp_path, respond, window=32_000)
    assert trajectory.kept and trajectory.metadata["text_tool_calls"] == 1
    assistant = trajectory.messages[2]
    assert assistant.tool_calls is not None and assistant.content == "Sure."
    (stored,) = assistant.tool_calls
    assert stored.type == "function" and stored.function.name == "write"
    assert json.loads(stored.function.arguments) == {"path": "notes.txt", "content": "hi\n"}
    assert trajectory.messages[3].tool_call_id == stored.id and trajectory.messages[3].success
    (record,) = to_openai_records(trajectory)
    exported = record["messages"][2]["tool_calls"][0]
    assert exported["id"] == stored.id and isinstance(exported["function"]["arguments"], str)
    assert record["metadata"]["text_tool_calls"] == 1
    stats = trajectory_stats([trajectory], fp="x")
    assert stats["text_tool_calls"] == {"total": 1, "episodes": 1, "kept_episodes": 1}


def test_an_episode_without_either_records_neither(tmp_path: Path) -> None:
    trajectory, _ = _run(tmp_path, _big_outputs(1), window=1_000_000)
    assert not {"text_tool_calls", "compactions", "compacted_context"} & set(trajectory.metadata)
    assert isinstance(trajectory, Trajectory)
