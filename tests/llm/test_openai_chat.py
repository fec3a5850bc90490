"""OpenAIChat against the loopback server: requests, retries, faults and clear failures."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ise_core.errors import LLMError
from ise_core.llm.base import ChatResult
from ise_core.llm.limits import LimitSettings
from ise_core.records import FunctionCall, Message, ToolCall
from tests.fakes import FakeOpenAIServer, Faults, Reply, completion
from tests.llm.conftest import ECHO_TOOL, ChatMaker

USER = [Message(role="system", content="be brief"), Message(role="user", content="hello")]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_tool_call_reply_becomes_an_assistant_message(
    server: FakeOpenAIServer, make_chat: ChatMaker
) -> None:
    result = run(make_chat(server).complete(USER, [ECHO_TOOL]))
    assert isinstance(result, ChatResult)
    assert result.message.role == "assistant"
    assert result.message.tool_calls is not None
    call = result.message.tool_calls[0]
    assert call.function.name == "echo"
    assert call.function.arguments == '{"text": "ping"}'
    assert result.usage.completion_tokens == 7 and result.usage.prompt_tokens > 0
    assert result.cached is False and result.retries == 0
    assert result.model == "fake-model" and result.finish_reason == "tool_calls"
    assert result.latency_s > 0


def test_request_carries_role_sampling_and_per_call_overrides(
    server: FakeOpenAIServer, make_chat: ChatMaker
) -> None:
    chat = make_chat(
        server, sampling={"temperature": 0.3, "top_p": 0.9, "max_tokens": 64, "seed": 11}
    )
    run(chat.complete(USER, None, temperature=0.0, episode="intent-1", attempt=2, stop=["\n"]))
    body = server.bodies[-1]
    assert body["model"] == "fake-model"
    assert body["temperature"] == 0.0  # the per-call override wins
    assert body["top_p"] == 0.9 and body["max_tokens"] == 64 and body["seed"] == 11
    assert body["stop"] == ["\n"]  # unknown options are request fields
    assert "episode" not in body and "attempt" not in body  # local options are never sent
    assert "tools" not in body


def test_wire_messages_drop_fields_the_chat_api_does_not_define(
    server: FakeOpenAIServer, make_chat: ChatMaker
) -> None:
    history = [
        *USER,
        Message(
            role="assistant",
            content=None,
            reasoning_content="thinking...",
            tool_calls=[ToolCall(id="c1", function=FunctionCall(name="echo", arguments="{}"))],
        ),
        Message(role="tool", tool_call_id="c1", name="echo", content="ok", success=True),
    ]
    run(make_chat(server).complete(history, [ECHO_TOOL]))
    sent = server.bodies[-1]["messages"]
    assert sent[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "echo", "arguments": "{}"}}
        ],
    }
    assert sent[3] == {"role": "tool", "content": "ok", "tool_call_id": "c1"}


def test_429_and_500_are_retried_and_counted(
    server: FakeOpenAIServer, make_chat: ChatMaker
) -> None:
    server.script("rate_limit", "server_error", "rate_limit", "ok")
    result = run(make_chat(server).complete(USER))
    assert result.retries == 3
    assert server.requests == 4
    assert result.message.content == "echo: hello"


def test_retry_after_seconds_is_honoured(server: FakeOpenAIServer, make_chat: ChatMaker) -> None:
    server.faults.retry_after = "0.4"
    server.script("rate_limit", "ok")
    started = time.monotonic()
    result = run(make_chat(server).complete(USER))
    assert time.monotonic() - started >= 0.4
    assert result.retries == 1


def test_retry_after_http_date_is_honoured(server: FakeOpenAIServer, make_chat: ChatMaker) -> None:
    # An HTTP date has one-second resolution: asking for 1.5 s means waiting at least ~0.5 s.
    server.faults.retry_after = "1.5"
    server.faults.retry_after_http_date = True
    server.script("rate_limit", "ok")
    started = time.monotonic()
    run(make_chat(server).complete(USER))
    assert time.monotonic() - started >= 0.45


def timed_retry(server: FakeOpenAIServer, make_chat: ChatMaker) -> float:
    """Seconds one request took that met one 429 and then succeeded."""
    server.script("rate_limit", "ok")
    started = time.monotonic()
    result = run(make_chat(server).complete(USER))
    assert result.retries == 1 and server.requests == 2
    return time.monotonic() - started


def test_retry_after_ms_is_read_as_milliseconds(
    server: FakeOpenAIServer, make_chat: ChatMaker
) -> None:
    # As OpenAI sends it: both headers, the milliseconds one the more precise.
    server.faults.retry_after = "0"
    server.faults.retry_after_ms = "1200"
    waited = timed_retry(server, make_chat)
    assert 1.2 <= waited < 1.2 * 1.1 + 1.0  # the ask plus at most 10 % jitter and some slack


def test_retry_after_ms_alone_is_honoured(server: FakeOpenAIServer, make_chat: ChatMaker) -> None:
    server.faults.retry_after = None
    server.faults.retry_after_ms = "700"
    assert timed_retry(server, make_chat) >= 0.7


def test_unreadable_retry_after_ms_falls_back_to_retry_after(
    server: FakeOpenAIServer, make_chat: ChatMaker
) -> None:
    server.faults.retry_after = "0.5"
    server.faults.retry_after_ms = "later"
    assert timed_retry(server, make_chat) >= 0.5


def test_absurd_retry_after_is_capped(
    server: FakeOpenAIServer, make_chat: ChatMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy asking for years: the wait stops at the cap (shrunk here to keep the test short).
    monkeypatch.setattr("ise_core.llm.limits.MAX_RETRY_AFTER_S", 0.4)
    server.faults.retry_after = "1e12"
    server.faults.retry_after_ms = "1e15"
    assert 0.4 <= timed_retry(server, make_chat) < 3.0


def test_timeouts_and_dropped_connections_are_retried(
    server: FakeOpenAIServer, make_chat: ChatMaker
) -> None:
    server.faults.slow_s = 0.6
    server.script("slow", "drop", "ok")
    result = run(make_chat(server, timeout_s=0.2).complete(USER))
    assert result.retries == 2
    assert server.requests == 3


def test_non_retryable_4xx_fails_at_once_with_a_clear_error(make_chat: ChatMaker) -> None:
    def bad_request(request: dict[str, Any]) -> Reply:
        return Reply(400, {"error": {"message": "unsupported parameter: seed"}})

    with FakeOpenAIServer(bad_request) as server:
        with pytest.raises(LLMError) as caught:
            run(make_chat(server).complete(USER))
        assert server.requests == 1
    error = caught.value
    text = str(error)
    assert server.base_url in text and "fake-model" in text and "400 Bad Request" in text
    assert "unsupported parameter: seed" in text and "after 1 attempt:" in text
    assert error.status == 400 and error.attempts == 1 and error.endpoint == server.base_url


def test_last_retry_failing_names_endpoint_model_and_status(
    server: FakeOpenAIServer, make_chat: ChatMaker
) -> None:
    server.faults.server_error = 1.0
    limits = LimitSettings(max_retries=3, backoff_base_s=0.001, backoff_max_s=0.01)
    with pytest.raises(LLMError) as caught:
        run(make_chat(server, limits=limits).complete(USER))
    assert server.requests == 4
    text = str(caught.value)
    assert "after 4 attempts" in text and "500 Internal Server Error" in text
    assert server.base_url in text and "model fake-model" in text


def test_unreachable_endpoint_fails_with_connection_status(make_chat: ChatMaker) -> None:
    dead = FakeOpenAIServer().start()
    dead_url = dead.base_url
    dead.stop()  # nothing listens on that port any more

    class Gone:
        base_url = dead_url

    limits = LimitSettings(max_retries=2, backoff_base_s=0.001, backoff_max_s=0.01)
    with pytest.raises(LLMError) as caught:
        run(make_chat(Gone, limits=limits).complete(USER))  # type: ignore[arg-type]
    assert caught.value.status == "connection" and caught.value.attempts == 3
    assert dead_url in str(caught.value) and "status connection" in str(caught.value)


def test_every_request_succeeds_or_fails_clearly_under_mixed_faults(make_chat: ChatMaker) -> None:
    faults = Faults(
        rate_limit=0.3,
        server_error=0.1,
        slow=0.05,
        slow_s=0.5,
        drop=0.05,
        bad_tool_json=0.0,
        seed=3,
    )
    with FakeOpenAIServer(latency_s=0.01, faults=faults) as server:
        chat = make_chat(server, timeout_s=0.25)

        async def many() -> list[Any]:
            calls = [chat.complete([Message(role="user", content=f"q{i}")]) for i in range(60)]
            return await asyncio.gather(*calls, return_exceptions=True)

        outcomes = run(many())
        stats = server.stats()
    successes = [o for o in outcomes if isinstance(o, ChatResult)]
    failures = [o for o in outcomes if not isinstance(o, ChatResult)]
    assert all(isinstance(f, LLMError) and "fake-model" in str(f) for f in failures)
    assert len(successes) >= 55  # 7 tries at ~50% fault rate: a request almost never fails
    for index, result in enumerate(outcomes):
        if isinstance(result, ChatResult):
            assert result.message.content == f"echo: q{index}"
    # Every request the server saw is either a success or a counted retry/failed attempt.
    attempts = sum(r.retries + 1 for r in successes) + sum(f.attempts for f in failures)
    assert attempts == stats["requests"]
    assert stats["faults"]["rate_limit"] > 0 and stats["faults"]["server_error"] > 0
    assert sum(r.retries for r in successes) > 0


def test_in_flight_never_exceeds_the_limit(make_chat: ChatMaker) -> None:
    with FakeOpenAIServer(latency_s=0.05) as server:
        limits = LimitSettings(max_in_flight=4, backoff_base_s=0.001)
        chat = make_chat(server, limits=limits)

        async def many() -> None:
            await asyncio.gather(
                *(chat.complete([Message(role="user", content=str(i))]) for i in range(40))
            )

        run(many())
        stats = server.stats()
    assert stats["requests"] == 40
    assert stats["max_in_flight"] == 4  # reached, never exceeded
    assert chat.limiter.max_in_flight == 4


def test_roles_on_one_endpoint_share_its_limit(make_chat: ChatMaker) -> None:
    with FakeOpenAIServer(latency_s=0.05) as server:
        limits = LimitSettings(max_in_flight=3, backoff_base_s=0.001)
        agent = make_chat(server, role="agent", limits=limits)
        user = make_chat(server, role="user", limits=limits)
        assert agent.limiter is user.limiter

        async def both() -> None:
            calls = [
                chat.complete([Message(role="user", content=f"{chat.role}{i}")])
                for i in range(15)
                for chat in (agent, user)
            ]
            await asyncio.gather(*calls)

        run(both())
        assert server.stats()["max_in_flight"] == 3


def test_reasoning_content_and_text_parts_are_read(make_chat: ChatMaker) -> None:
    def reasoning(request: dict[str, Any]) -> dict[str, Any]:
        body = completion(request, content=None)
        body["choices"][0]["message"]["content"] = [{"type": "text", "text": "done"}]
        body["choices"][0]["message"]["reasoning_content"] = "because"
        return body

    with FakeOpenAIServer(reasoning) as server:
        result = run(make_chat(server).complete(USER))
    assert result.message.content == "done"
    assert result.message.reasoning_content == "because"


def test_a_new_event_loop_gets_a_working_client(
    server: FakeOpenAIServer, make_chat: ChatMaker
) -> None:
    chat = make_chat(server)
    run(chat.complete(USER))
    run(chat.complete(USER))  # a second asyncio.run: the old loop's pool must not be reused
    assert server.requests == 2
