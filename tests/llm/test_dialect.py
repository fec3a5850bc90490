"""Reasoning split, text-call recovery and run-on replies, through the real client path."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ise_core.llm.dialect import refine_reply, repetition, split_reasoning
from ise_core.llm.openai_chat import OpenAIChat
from ise_core.llm.replies import MalformedResponse
from ise_core.records import Message
from tests.fakes import FakeOpenAIServer, completion

ECHO = {
    "type": "function",
    "function": {
        "name": "echo",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
}


@pytest.mark.parametrize(
    ("content", "reasoning", "expected"),
    [
        ("<think>plan it</think>The answer.", None, ("The answer.", "plan it")),
        ("  <think>\nstep 1\n</think>\n\nDone", "server said", ("Done", "server said\n\nstep 1")),
        ("<think>still thinking when cut off", None, (None, "still thinking when cut off")),
        ("opened by the template</think>Answer", None, ("Answer", "opened by the template")),
        ("No reasoning here.", None, ("No reasoning here.", None)),
        (None, "only reasoning", (None, "only reasoning")),
    ],
)
def test_split_reasoning(
    content: str | None, reasoning: str | None, expected: tuple[str | None, str | None]
) -> None:
    assert split_reasoning(content, reasoning) == expected


@pytest.mark.parametrize(
    "text",
    [
        "ok" + "\n" * 2000,  # the blank-line run-on seen from a small model without max_tokens
        "Sure. " + "I will do it. " * 80,
        "x" * 700,
        "| a | b |\n" * 100,
    ],
)
def test_degenerate_repetition_is_caught(text: str) -> None:
    assert repetition(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "A normal answer.",
        "\n".join(f"line {i}: value {i * i}" for i in range(200)),
        "Results:\n" + "".join(f"- file_{i}.txt ({i * 13 % 97} bytes)\n" for i in range(80)),
    ],
)
def test_ordinary_long_text_is_not_repetition(text: str) -> None:
    assert repetition(text) is None


def test_refine_recovers_text_calls_only_when_tools_were_offered() -> None:
    text = '```json\n{"name": "echo", "arguments": {"text": "hi"}}\n```'
    message = Message(role="assistant", content=text)
    with_tools = refine_reply(message, None, finish_reason="stop", offered={"echo"})
    assert with_tools.problem is None and with_tools.text_tool_calls == 1
    assert with_tools.message.tool_calls and with_tools.message.content is None
    without = refine_reply(message, None, finish_reason="stop", offered=set())
    assert without.text_tool_calls == 0 and without.message.content == text


def test_refine_names_an_unknown_tool_and_a_cut_off_reply() -> None:
    message = Message(role="assistant", content='{"name": "rm_rf", "arguments": {}}')
    refined = refine_reply(message, None, finish_reason="stop", offered={"echo"})
    assert refined.problem is not None and refined.problem[0] == "unknown_tool"
    cut = refine_reply(
        Message(role="assistant", content="Half a"), None, finish_reason="length", offered=set()
    )
    assert cut.problem is not None and cut.problem[0] == "truncated"


def serve(content: str, finish: str = "stop") -> Any:
    def responder(request: dict[str, Any]) -> dict[str, Any]:
        body = completion(request, content=content)
        body["choices"][0]["finish_reason"] = finish
        return body

    return responder


def chat_for(server: FakeOpenAIServer, mode: str = "native") -> OpenAIChat:
    return OpenAIChat("agent", model="m", base_url=server.base_url, tool_calling=mode)


def test_client_stores_text_calls_as_tool_calls_and_counts_them() -> None:
    reply = 'I will echo.\n<tool_call>{"name": "echo", "arguments": {"text": "a"}}</tool_call>'
    with FakeOpenAIServer(serve(reply)) as server:
        result = asyncio.run(
            chat_for(server).complete([Message(role="user", content="go")], [ECHO])
        )
    assert result.text_tool_calls == 1
    assert result.message.content == "I will echo."
    assert result.message.tool_calls is not None
    assert result.message.tool_calls[0].function.arguments == '{"text": "a"}'


def test_prompted_mode_sends_no_tools_and_puts_schemas_in_the_system_prompt() -> None:
    reply = '{"name": "echo", "arguments": {"text": "b"}}'
    with FakeOpenAIServer(serve(reply)) as server:
        chat = chat_for(server, "prompted")
        messages = [Message(role="system", content="Be brief."), Message(role="user", content="x")]
        result = asyncio.run(chat.complete(messages, [ECHO], tool_choice="required"))
        body = server.bodies[0]
    assert "tools" not in body and "tool_choice" not in body
    assert body["messages"][0]["content"].startswith("Be brief.")
    assert '"name": "echo"' in body["messages"][0]["content"]
    assert result.text_tool_calls == 1


@pytest.mark.parametrize(
    ("content", "finish", "kind"),
    [
        ("ok" + "\n" * 3000, "stop", "repetition"),
        ("I was about to say", "length", "truncated"),
        (
            '<tool_call>{"name": "echo", "arguments": {"text": </tool_call>',
            "stop",
            "invalid_tool_call",
        ),
    ],
)
def test_unusable_replies_are_malformed_with_what_could_be_read(
    content: str, finish: str, kind: str
) -> None:
    with (
        FakeOpenAIServer(serve(content, finish)) as server,
        pytest.raises(MalformedResponse) as caught,
    ):
        asyncio.run(chat_for(server).complete([Message(role="user", content="go")], [ECHO]))
    assert caught.value.kind == kind
    assert caught.value.result is not None
    if kind == "invalid_tool_call":  # kept as a call, so the agent loop reports it to the model
        assert caught.value.result.message.tool_calls
