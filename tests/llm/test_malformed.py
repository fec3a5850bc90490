"""Malformed replies come back as MalformedResponse with a kind, a detail and the usage."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ise_core.errors import LLMError
from ise_core.llm.accounting import Accountant
from ise_core.llm.replies import MalformedResponse, parse_reply, stored_reply
from ise_core.records import Message
from tests.fakes import FakeOpenAIServer, completion, tool_call
from tests.llm.conftest import ECHO_TOOL, ChatMaker

ASK = [Message(role="user", content="do it")]


def reply_with(message: dict[str, Any]) -> dict[str, Any]:
    return stored_reply(
        {"model": "m", "choices": [{"message": message, "finish_reason": "stop"}], "usage": {}}
    )


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ({"role": "assistant", "content": None}, "empty"),
        ({"role": "assistant", "content": "  \n"}, "empty"),
        ({"role": "assistant", "content": "", "tool_calls": []}, "empty"),
        (
            {"role": "assistant", "tool_calls": [tool_call("echo", "{oops")]},
            "invalid_tool_arguments",
        ),
        (
            {"role": "assistant", "tool_calls": [tool_call("echo", "[1, 2]")]},
            "invalid_tool_arguments",
        ),
        ({"role": "assistant", "tool_calls": [tool_call("rm_rf", "{}")]}, "unknown_tool"),
        ({"role": "assistant", "tool_calls": [{"id": "x", "function": {}}]}, "invalid_tool_call"),
    ],
)
def test_problem_kinds(message: dict[str, Any], kind: str) -> None:
    _, problem = parse_reply(reply_with(message), {"echo"})
    assert problem is not None and problem[0] == kind
    assert problem[1]  # a detail a person can read


def test_no_choices() -> None:
    for body in ({"choices": []}, {}, {"choices": [{"finish_reason": "stop"}]}, "nonsense"):
        message, problem = parse_reply(stored_reply(body), {"echo"})
        assert problem is not None and problem[0] == "no_choices"
        assert message.role == "assistant"


def test_lenient_forms_are_accepted() -> None:
    # Blank arguments mean no arguments; an object instead of a string is serialised; a
    # missing id is derived from the reply so replays stay identical.
    message, problem = parse_reply(
        reply_with(
            {
                "content": None,
                "tool_calls": [
                    {"type": "function", "function": {"name": "echo", "arguments": ""}},
                    {"type": "function", "function": {"name": "echo", "arguments": {"text": "a"}}},
                ],
            }
        ),
        {"echo"},
    )
    assert problem is None
    assert message.tool_calls is not None
    assert [c.function.arguments for c in message.tool_calls] == ["{}", '{"text": "a"}']
    first_ids = [c.id for c in message.tool_calls]
    again, _ = parse_reply(
        reply_with(
            {
                "content": None,
                "tool_calls": [
                    {"type": "function", "function": {"name": "echo", "arguments": ""}},
                    {"type": "function", "function": {"name": "echo", "arguments": {"text": "a"}}},
                ],
            }
        ),
        {"echo"},
    )
    assert [c.id for c in again.tool_calls or []] == first_ids
    assert len(set(first_ids)) == 2


def test_tool_call_without_offered_tools_is_unknown() -> None:
    _, problem = parse_reply(reply_with({"tool_calls": [tool_call("echo", "{}")]}), None)
    assert problem is not None and problem[0] == "unknown_tool"
    assert "no tools were offered" in problem[1]


def test_invalid_tool_json_from_the_server_is_structured(
    server: FakeOpenAIServer, make_chat: ChatMaker
) -> None:
    accountant = Accountant()
    server.script("bad_tool_json")
    with pytest.raises(MalformedResponse) as caught:
        asyncio.run(make_chat(server, accountant=accountant).complete(ASK, [ECHO_TOOL]))
    bad = caught.value
    assert isinstance(bad, LLMError)  # callers that only know LLMError still stop cleanly
    assert bad.kind == "invalid_tool_arguments"
    assert "not valid JSON" in bad.detail
    assert bad.observation().startswith("Error: ")
    assert bad.as_dict()["kind"] == "invalid_tool_arguments"
    # The partial message keeps the raw call, and the tokens were accounted.
    assert bad.result is not None
    assert bad.result.message.tool_calls is not None
    assert bad.result.message.tool_calls[0].function.arguments == '{"text": '
    assert bad.result.usage.completion_tokens == 7
    snapshot = accountant.snapshot()
    assert snapshot["malformed"] == 1 and snapshot["completion_tokens"] == 7


def test_malformed_reply_is_cached_and_attempt_asks_again(make_chat: ChatMaker) -> None:
    replies = iter(["", "second answer"])

    def responder(request: dict[str, Any]) -> dict[str, Any]:
        return completion(request, content=next(replies))

    with FakeOpenAIServer(responder) as server:
        chat = make_chat(server, cache_mode="read_write")
        for _ in range(2):  # the replay reproduces the malformed reply without a request
            with pytest.raises(MalformedResponse) as caught:
                asyncio.run(chat.complete(ASK))
            assert caught.value.kind == "empty"
        assert server.requests == 1
        result = asyncio.run(chat.complete(ASK, attempt=1))
        assert result.message.content == "second answer"
        assert server.requests == 2


def test_reply_without_choices_is_not_cached_and_names_the_server_error(
    make_chat: ChatMaker,
) -> None:
    def overloaded(request: dict[str, Any]) -> dict[str, Any]:
        return {"error": {"message": "model is overloaded"}}

    with FakeOpenAIServer(overloaded) as server:
        chat = make_chat(server, cache_mode="read_write")
        for expected_requests in (1, 2):  # nothing cached: the second call asks again
            with pytest.raises(MalformedResponse) as caught:
                asyncio.run(chat.complete(ASK))
            assert server.requests == expected_requests
    assert caught.value.kind == "no_choices"
    assert "model is overloaded" in caught.value.detail


def test_cut_off_tool_call_says_so() -> None:
    stored = stored_reply(
        {
            "choices": [
                {
                    "message": {"content": None, "tool_calls": [tool_call("echo", '{"te')]},
                    "finish_reason": "length",
                }
            ]
        }
    )
    _, problem = parse_reply(stored, {"echo"})
    assert problem is not None and problem[0] == "invalid_tool_arguments"
    assert "cut off at max_tokens" in problem[1]


def test_errors_survive_pickling() -> None:
    import pickle

    bad = MalformedResponse("empty", "nothing", endpoint="http://e/v1", model="m")
    again = pickle.loads(pickle.dumps(bad))
    assert (again.kind, again.detail, again.endpoint, str(again)) == (
        "empty",
        "nothing",
        "http://e/v1",
        str(bad),
    )
    failed = LLMError("boom", endpoint="http://e/v1", model="m", status=503, attempts=7)
    restored = pickle.loads(pickle.dumps(failed))
    assert (restored.status, restored.attempts, str(restored)) == (503, 7, "boom")
