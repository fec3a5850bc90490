"""Tool calls written as text: every dialect, several calls, broken ones, and the prompted mode.

Replies captured from a real llama.cpp server are checked in test_captured_replies.py; these
are the hand-written edge cases around them.
"""

from __future__ import annotations

import json

import pytest

from ise_core.llm.toolcalls import (
    UNPARSED_KEY,
    UNPARSED_NAME,
    call_as_text,
    parse_text_tool_calls,
    render_tools_prompt,
    to_prompted,
)
from ise_core.records import FunctionCall, Message, ToolCall

EXEC = {
    "type": "function",
    "function": {
        "name": "exec",
        "description": "Run a shell command.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    },
}


def names_and_args(text: str) -> list[tuple[str, dict[str, object]]]:
    found = parse_text_tool_calls(text)
    assert not found.problems, found.problems
    return [(c.function.name, json.loads(c.function.arguments)) for c in found.calls]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "exec", "arguments": {"command": "ls"}}\n</tool_call>',
        '<tool_call>{"name": "exec", "arguments": {"command": "ls"}}',  # unclosed, at the end
        '```json\n{"name": "exec", "arguments": {"command": "ls"}}\n```',
        '```\n{"name": "exec", "arguments": {"command": "ls"}}\n```',
        '```tool_call\n{"name": "exec", "parameters": {"command": "ls"}}\n```',
        '{"name": "exec", "arguments": {"command": "ls"}}',
        'Sure. {"name": "exec", "arguments": "{\\"command\\": \\"ls\\"}"} Done.',
        '{"type": "function", "function": {"name": "exec", "arguments": {"command": "ls"}}}',
        '{"tool_call": {"name": "exec", "arguments": {"command": "ls"}}}',
        '<tool_call>\n```json\n{"name": "exec", "arguments": {"command": "ls"}}\n```\n</tool_call>',
    ],
)
def test_one_call_in_every_dialect(text: str) -> None:
    assert names_and_args(text) == [("exec", {"command": "ls"})]


def test_several_calls_keep_their_order_and_get_distinct_stable_ids() -> None:
    text = (
        "First I list, then I read.\n"
        '<tool_call>{"name": "exec", "arguments": {"command": "ls"}}</tool_call>\n'
        '<tool_call>{"name": "read", "arguments": {"path": "a.txt"}}</tool_call>'
    )
    found = parse_text_tool_calls(text)
    assert [c.function.name for c in found.calls] == ["exec", "read"]
    assert found.content == "First I list, then I read."
    ids = [c.id for c in found.calls]
    assert len(set(ids)) == 2 and ids == [c.id for c in parse_text_tool_calls(text).calls]


def test_a_list_of_calls_and_mixed_fence_and_bare() -> None:
    listed = '[{"name": "exec", "arguments": {"command": "a"}}, {"name": "exec", "arguments": {}}]'
    assert names_and_args(listed) == [("exec", {"command": "a"}), ("exec", {})]
    mixed = (
        '```json\n{"name": "write", "arguments": {"path": "x", "content": "1"}}\n```\n'
        'then {"name": "exec", "arguments": {"command": "cat x"}}'
    )
    assert [n for n, _ in names_and_args(mixed)] == ["write", "exec"]


@pytest.mark.parametrize(
    "text",
    [
        "Here is the answer: 42.",
        'The config is ```json\n{"debug": true, "level": 3}\n```',
        'A person: {"name": "Ada", "age": 36}.',
        "Use {braces} like this, or [1, 2, 3].",
    ],
)
def test_json_that_is_not_a_call_stays_text(text: str) -> None:
    found = parse_text_tool_calls(text)
    assert found.calls == [] and found.problems == []
    assert found.content == text


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ('<tool_call>{"name": "exec", "arguments": {"command": "ls"</tool_call>', "exec"),
        ("<tool_call>exec ls -la</tool_call>", UNPARSED_NAME),
        ('```json\n{"name": "exec", "arguments": {command: ls}}\n```', "exec"),
        ('I will run {"name": "exec", "arguments": {"command": "ls"', "exec"),
        ('{"name": "exec", "arguments": "ls -la"}', "exec"),
        ('{"name": "exec", "arguments": [1, 2]}', "exec"),
    ],
)
def test_call_like_text_that_does_not_parse_is_reported_never_dropped(text: str, name: str) -> None:
    found = parse_text_tool_calls(text)
    assert len(found.calls) == 1 and found.problems
    call = found.calls[0]
    assert call.function.name == name
    # The raw text is kept inside a JSON object (the export's contract) under a key no tool
    # has, so running the call answers the model with an argument error.
    arguments = json.loads(call.function.arguments)
    assert list(arguments) == [UNPARSED_KEY] and arguments[UNPARSED_KEY]


def test_empty_and_none_text() -> None:
    assert parse_text_tool_calls(None).calls == []
    assert parse_text_tool_calls("   ").calls == []


def test_call_as_text_round_trips_through_the_parser() -> None:
    call = ToolCall(id="c1", function=FunctionCall(name="exec", arguments='{"command": "ls"}'))
    assert names_and_args(call_as_text(call)) == [("exec", {"command": "ls"})]


def test_tools_prompt_lists_every_schema_and_the_format() -> None:
    prompt = render_tools_prompt([EXEC])
    assert '"name": "exec"' in prompt and '"required": ["command"]' in prompt
    assert "<tool_call>" in prompt and "{{" not in prompt


def test_to_prompted_writes_calls_and_results_as_text_turns() -> None:
    call = ToolCall(id="c1", function=FunctionCall(name="exec", arguments='{"command": "ls"}'))
    messages = [
        Message(role="system", content="You help."),
        Message(role="user", content="list files"),
        Message(role="assistant", content="Listing.", tool_calls=[call]),
        Message(role="tool", tool_call_id="c1", name="exec", content="a.txt", success=True),
        Message(role="tool", tool_call_id="c2", name="exec", content="b.txt", success=True),
    ]
    out = to_prompted(messages, [EXEC])
    assert [m.role for m in out] == ["system", "user", "assistant", "user"]
    assert out[0].content is not None and out[0].content.startswith("You help.")
    assert "<tools>" in out[0].content
    assert out[2].tool_calls is None and "<tool_call>" in (out[2].content or "")
    assert (out[3].content or "").count("<tool_response") == 2  # merged: roles alternate
    no_system = to_prompted([Message(role="user", content="hi")], [EXEC])
    assert [m.role for m in no_system] == ["system", "user"]


def test_data_with_name_keys_is_not_a_call_even_when_cut_off() -> None:
    # An answer showing a file's (truncated) JSON records: names, but no tool call.
    listing = (
        "Here is what I found in `orders.json`:\n```json\n[\n    {\n        \"name\": "
        '"clean-address-list-1",\n        "amount": "213"\n    },\n    {\n        "name": '
        '"x"\n...\n```'
    )
    found = parse_text_tool_calls(listing)
    assert found.calls == [] and found.problems == [] and found.content == listing


def test_the_same_text_answering_two_requests_gets_two_ids() -> None:
    text = '{"name": "exec", "arguments": {"command": "ls"}}'
    first = parse_text_tool_calls(text, seed="3:abc").calls[0].id
    assert first == parse_text_tool_calls(text, seed="3:abc").calls[0].id  # stable on replay
    assert first != parse_text_tool_calls(text, seed="5:def").calls[0].id
