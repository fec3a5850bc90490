"""The reply parsers against replies captured from a real llama-server (SmolLM2-135M-Instruct).

The files in captured/ were written by tests/realmodel/capture_replies.py; the expectations
below were written by reading each reply. They run without a server, so CI checks the parsers
on real model output on every run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ise_core.llm.context import is_context_overflow
from ise_core.llm.dialect import refine_reply, repetition
from ise_core.llm.replies import parse_reply
from ise_core.simulate.user_sim import parse_user_turn

CAPTURED = Path(__file__).resolve().parent / "captured"


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((CAPTURED / f"{name}.json").read_text(encoding="utf-8")))


def refined(name: str) -> Any:
    record = load(name)
    stored = record["reply"]
    offered = set(record["tools"])
    message, problem = parse_reply(stored, offered)
    return refine_reply(message, problem, finish_reason=stored["finish_reason"], offered=offered)


@pytest.mark.parametrize(
    ("name", "tool", "arguments"),
    [
        ("probe_prompted_schema", "echo", {"text": "ping"}),
        ("agent_write_prompted_schema", "write", {"path": "hello.txt"}),
        ("agent_answer_prompted_schema", "exec", {"command": "exec"}),
    ],
)
def test_constrained_prompted_replies_become_tool_calls(
    name: str, tool: str, arguments: dict[str, str]
) -> None:
    result = refined(name)
    assert result.problem is None and result.text_tool_calls == 1
    assert result.message.content is None
    (call,) = result.message.tool_calls
    parsed = json.loads(call.function.arguments)
    assert call.function.name == tool and arguments.items() <= parsed.items()


@pytest.mark.parametrize(
    "name",
    [
        # The template has no tool support: llama.cpp drops the tools and the model chats.
        "probe_native_auto",
        "probe_native_required",
        "probe_prompted",
        # Code in fences (bash, python) is an answer, not a call: nothing is invented.
        "agent_write_native",
        "agent_write_prompted",
        "agent_two_steps_prompted",
    ],
)
def test_plain_text_replies_yield_no_calls_and_no_problems(name: str) -> None:
    result = refined(name)
    assert result.problem is None and result.text_tool_calls == 0
    assert result.message.tool_calls is None and result.message.content


def test_a_run_on_list_is_cut_and_caught_as_repetition() -> None:
    record = load("agent_list_native")
    assert record["reply"]["finish_reason"] == "length"
    assert repetition(record["reply"]["message"]["content"]) is not None
    result = refined("agent_list_native")
    assert result.problem is not None and result.problem[0] == "truncated"


def test_a_reply_cut_at_max_tokens_is_truncated() -> None:
    result = refined("cut_at_max_tokens")
    assert result.problem == ("truncated", "the reply was cut off at max_tokens before it ended")


def test_no_reasoning_is_invented_when_the_model_writes_none() -> None:
    result = refined("think_block")
    assert result.message.reasoning_content is None and result.problem is None


def test_a_user_turn_in_fences_parses() -> None:
    turn = parse_user_turn(load("user_turn_json")["reply"]["message"]["content"])
    assert turn.completed is False and turn.query == "your message"


def test_the_servers_context_overflow_is_classified() -> None:
    record = load("context_overflow")
    assert record["status"] == 400
    assert is_context_overflow(400, record["reply"]["error"]["message"])
    assert not is_context_overflow(500, record["reply"]["error"]["message"])
