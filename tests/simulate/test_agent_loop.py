"""The agent loop against the real local sandbox: what the model sees is what really happened."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ise_core.llm.base import ChatResult
from ise_core.llm.replies import MalformedResponse
from ise_core.records import Message
from ise_core.simulate.agent_loop import ran_in_workspace, run_agent_turn
from ise_core.workspace import open_workspace
from ise_core.workspace.base import Workspace
from ise_core.workspace.toolkit import build_spec, invoke
from tests.simulate.helpers import FakeChat, call, local_sandbox_reason, make_settings

pytestmark = pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    settings = make_settings(tmp_path)
    ws = open_workspace(settings.workspace, base_dir=tmp_path)
    ws.open()
    try:
        yield ws
    finally:
        ws.close()


def _run(agent: FakeChat, ws: Workspace, max_steps: int = 8):  # type: ignore[no-untyped-def]
    conversation = [Message(role="system", content="sys"), Message(role="user", content="go")]
    return asyncio.run(
        run_agent_turn(agent, conversation, ws, ws.tool_schemas(), max_steps=max_steps)
    )


def _tool_messages(turn) -> list[Message]:  # type: ignore[no-untyped-def]
    return [m for m in turn.messages if m.role == "tool"]


def test_a_written_file_is_read_back_exactly_by_exec_cat(workspace: Workspace) -> None:
    content = "line one\n  indented ünïcode ✓\n\ttab\n"
    agent = FakeChat(
        [
            Message(
                role="assistant",
                tool_calls=[
                    call("write", {"path": "notes/a.txt", "content": content}, "c1"),
                    call("exec", {"command": "cat notes/a.txt"}, "c2"),
                ],
            ),
            "done",
        ]
    )
    turn = _run(agent, workspace)
    wrote, cat = _tool_messages(turn)
    assert wrote.success is True and wrote.tool_call_id == "c1" and wrote.name == "write"
    assert cat.success is True and cat.content == content
    assert turn.reply == "done" and turn.stop_reason == "answered"
    # both calls ran in order within one step; the agent saw their results on its next call
    assert [m.tool_call_id for m in agent.requests[1] if m.role == "tool"] == ["c1", "c2"]


def test_a_failing_command_shows_its_real_stderr_and_exit_code(workspace: Workspace) -> None:
    agent = FakeChat(
        [
            Message(
                role="assistant",
                tool_calls=[call("exec", {"command": "ls no_such_dir; exit 3"}, "c1")],
            ),
            "it failed",
        ]
    )
    (failed,) = _tool_messages(_run(agent, workspace))
    assert failed.success is False
    assert "exited with code 3" in (failed.content or "")
    assert "No such file or directory" in (failed.content or "")


def test_unknown_tool_and_bad_arguments_become_error_observations(workspace: Workspace) -> None:
    agent = FakeChat(
        [
            Message(
                role="assistant",
                tool_calls=[
                    call("teleport", {"to": "mars"}, "c1"),
                    call("exec", "{not json", "c2"),
                    call("exec", [1, 2], "c3"),
                    call("read", {}, "c4"),
                    call("exec", {"command": 42}, "c5"),
                    call("write", {"path": "a", "content": "x", "mode": "w"}, "c6"),
                    call("exec", {"command": "echo still alive"}, "c7"),
                ],
            ),
            "ok",
        ]
    )
    results = {m.tool_call_id: m for m in _tool_messages(_run(agent, workspace))}
    assert all(results[c].success is False for c in ("c1", "c2", "c3", "c4", "c5", "c6"))
    assert "unknown tool 'teleport'" in (results["c1"].content or "")
    assert "not valid JSON" in (results["c2"].content or "")
    assert "must be a JSON object" in (results["c3"].content or "")
    # Arguments are checked once, by the workspace's tool set, against each tool's signature.
    assert "invalid arguments for read: 'path' is required" in (results["c4"].content or "")
    assert "'command': Input should be a valid string" in (results["c5"].content or "")
    assert "'mode' is not a parameter of write" in (results["c6"].content or "")
    assert all((results[c].content or "").startswith("Error:") for c in ("c1", "c2", "c4"))
    assert results["c7"].success is True and "still alive" in (results["c7"].content or "")
    # Only c7 reached the sandbox: the others were refused before running.
    assert [c for c, m in sorted(results.items()) if ran_in_workspace(m)] == ["c7"]


def test_the_turn_stops_at_max_steps(workspace: Workspace) -> None:
    loop = Message(
        role="assistant", content="working", tool_calls=[call("exec", {"command": "true"}, "c")]
    )
    agent = FakeChat([loop])
    turn = _run(agent, workspace, max_steps=3)
    assert turn.stop_reason == "max_steps" and turn.steps == 3
    assert len(agent.requests) == 3 and turn.reply == "working"


class _Malformed:
    name = "malformed"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, messages, tools=None, **options):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 1:
            raise MalformedResponse("empty", "no content and no tool calls")
        if self.calls == 2:
            bad = Message(role="assistant", tool_calls=[call("exec", "{oops", "m1")])
            raise MalformedResponse(
                "invalid_tool_arguments", "not JSON", result=ChatResult(message=bad)
            )
        return ChatResult(message=Message(role="assistant", content="recovered"))


def test_malformed_replies_are_retried_or_shown_to_the_model(workspace: Workspace) -> None:
    agent = _Malformed()
    turn = _run(agent, workspace)  # type: ignore[arg-type]
    assert turn.malformed_replies == 2 and turn.reply == "recovered"
    (tool,) = _tool_messages(turn)
    assert tool.tool_call_id == "m1" and tool.success is False


def _typed(ctx: object, a: int, b: bool = False) -> str:
    """A tool with typed arguments.

    Args:
        a: A number.
        b: A flag.
    """
    return f"{a} {b}"


def test_tool_arguments_are_checked_against_the_signature() -> None:
    spec = build_spec(_typed)
    assert spec.parameters["required"] == ["a"]
    assert invoke(spec, None, {"a": 1}).ok
    flagged = invoke(spec, None, {"a": True})  # JSON true is not a number
    assert not flagged.ok and "'a': Value error, expected a number" in flagged.content
    missing = invoke(spec, None, {})
    assert not missing.ok and "'a' is required" in missing.content
    assert json.dumps(spec.schema())  # the schema itself is plain JSON
