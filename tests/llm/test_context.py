"""The context window: discovery, estimation, overflow classification and compaction."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ise_core.llm.context import (
    MARKER,
    CharEstimate,
    compact,
    cut_output,
    discover_context_window,
    is_context_overflow,
    request_tokens,
)
from ise_core.records import FunctionCall, Message, ToolCall


@contextmanager
def json_server(routes: dict[str, Any]) -> Iterator[str]:
    """A loopback server answering GET paths with fixed JSON (404 elsewhere)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in routes:
                self.send_error(404)
                return
            data = json.dumps(routes[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_window_from_llama_cpp_props() -> None:
    props = {"default_generation_settings": {"n_ctx": 8192}, "total_slots": 2}
    with json_server({"/props": props}) as base_url:
        assert discover_context_window(base_url, "m") == 8192


def test_window_from_vllm_models_listing() -> None:
    listing = {"data": [{"id": "other", "max_model_len": 1}, {"id": "m", "max_model_len": 32768}]}
    with json_server({"/v1/models": listing}) as base_url:
        assert discover_context_window(base_url, "m") == 32768


def test_no_window_when_the_server_says_nothing() -> None:
    with json_server({"/v1/models": {"data": [{"id": "m"}]}}) as base_url:
        assert discover_context_window(base_url, "m") is None
    assert discover_context_window("http://127.0.0.1:9/v1", "m") is None  # nothing listening


@pytest.mark.parametrize(
    ("status", "text", "overflow"),
    [
        (400, "the request exceeds the available context size, try increasing it", True),
        (400, "This model's maximum context length is 4096 tokens. However, you requested", True),
        (400, "context_length_exceeded", True),
        (400, "prompt is too long: 9000 tokens > 8192 maximum", True),
        (400, "invalid value for temperature", False),
        (500, "the request exceeds the available context size", False),
        (429, "too many requests", False),
    ],
)
def test_overflow_classification(status: int, text: str, overflow: bool) -> None:
    assert is_context_overflow(status, text) is overflow


def test_estimate_counts_messages_calls_and_tools() -> None:
    counter = CharEstimate()
    call = ToolCall(id="c", function=FunctionCall(name="exec", arguments='{"command": "ls"}'))
    plain = [Message(role="user", content="x" * 400)]
    with_call = [*plain, Message(role="assistant", tool_calls=[call])]
    assert request_tokens(plain, None, counter) >= 100
    assert request_tokens(with_call, None, counter) > request_tokens(plain, None, counter)
    tools = [{"type": "function", "function": {"name": "exec", "description": "d" * 400}}]
    assert request_tokens(plain, tools, counter) >= request_tokens(plain, None, counter) + 100


def conversation(outputs: list[int]) -> list[Message]:
    messages = [Message(role="system", content="s"), Message(role="user", content="do it")]
    for index, size in enumerate(outputs):
        call = ToolCall(id=f"c{index}", function=FunctionCall(name="exec", arguments="{}"))
        messages.append(Message(role="assistant", tool_calls=[call]))
        messages.append(
            Message(role="tool", tool_call_id=f"c{index}", name="exec", content=f"{index}" * size)
        )
    return messages


def count(messages: Any) -> int:
    return request_tokens(messages, None, CharEstimate())


def test_compaction_cuts_oldest_outputs_first_and_keeps_the_newest_whole() -> None:
    messages = conversation([16_000, 16_000, 16_000])
    before = count(messages)
    result = compact(messages, before - 3000, count)
    assert result.fits and result.compacted == 1
    tool_texts = [m.content or "" for m in result.messages if m.role == "tool"]
    assert "omitted to fit the context window" in tool_texts[0]
    assert tool_texts[1] == "1" * 16_000 and tool_texts[2] == "2" * 16_000
    assert len(messages[3].content or "") == 16_000  # the caller's record is untouched
    tighter = compact(messages, 3000, count)
    assert tighter.compacted == 2 and not tighter.fits  # the newest output alone is too big
    assert [m.role for m in tighter.messages] == [m.role for m in messages]


def test_compaction_does_nothing_when_it_fits_and_never_cuts_twice() -> None:
    messages = conversation([100, 100])
    assert compact(messages, 10_000, count).compacted == 0
    once = cut_output("a" * 5000)
    assert once.startswith("a" * 600) and once.endswith("a" * 400)
    assert MARKER.format(cut=4000) in once
    assert cut_output(once) == once


# --- through the client --------------------------------------------------------------------------


def tool_conversation(sizes: list[int]) -> list[Message]:
    return conversation(sizes)


def test_the_client_compacts_what_it_sends_and_leaves_the_record_whole() -> None:
    import asyncio

    from ise_core.llm.openai_chat import OpenAIChat
    from tests.fakes import FakeOpenAIServer

    messages = tool_conversation([16_000, 16_000, 4_000])
    with FakeOpenAIServer() as server:
        chat = OpenAIChat("agent", model="m", base_url=server.base_url, context_window=4096,
                          sampling={"max_tokens": 256})  # fmt: skip
        result = asyncio.run(chat.complete(messages))
        sent = server.bodies[0]["messages"]
    assert result.compactions == 2
    tool_texts = [m["content"] for m in sent if m["role"] == "tool"]
    assert all("omitted to fit the context window" in t for t in tool_texts[:2])
    assert tool_texts[2] == "2" * 4_000
    assert len(messages[3].content or "") == 16_000  # the caller's conversation is untouched


def test_a_servers_overflow_is_compacted_once_then_raised() -> None:
    import asyncio

    from ise_core.errors import ContextOverflow
    from ise_core.llm.openai_chat import OpenAIChat
    from tests.fakes import FakeOpenAIServer
    from tests.fakes.openai_server import Reply, completion

    def small_server(request: dict[str, Any]) -> Any:
        size = len(json.dumps(request["messages"]))
        if size > 20_000:
            message = f"request ({size // 4} tokens) exceeds the available context size (5000)"
            return Reply(400, {"error": {"code": 400, "message": message}})
        return completion(request, content="ok")

    # The window is said to be big, so the first request goes out whole and meets the 400.
    with FakeOpenAIServer(small_server) as server:
        chat = OpenAIChat("agent", model="m", base_url=server.base_url, context_window=16_000,
                          sampling={"max_tokens": 256})  # fmt: skip
        result = asyncio.run(chat.complete(tool_conversation([12_000, 12_000, 3_000])))
        assert result.compactions >= 1 and server.requests == 2
        with pytest.raises(ContextOverflow):  # the newest output alone is too big: no cure
            asyncio.run(chat.complete(tool_conversation([100, 30_000])))
