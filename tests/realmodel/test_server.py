"""The LLM layer against a real llama-server: the probe, ``ise llm check``, the context window,
the server's tokenizer, its overflow error, replies cut at max_tokens."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from ise_core.cli_llm import main
from ise_core.errors import ContextOverflow
from ise_core.llm.cache import ResponseCache
from ise_core.llm.context import (
    CharEstimate,
    ServerTokenizer,
    discover_context_window,
    request_tokens,
)
from ise_core.llm.local_server import LocalModelServer
from ise_core.llm.openai_chat import OpenAIChat
from ise_core.llm.probe import CHECK_TOOL, forget_decisions
from ise_core.llm.replies import MalformedResponse
from ise_core.records import Message


def chat_on(server: LocalModelServer, **options: object) -> OpenAIChat:
    sampling = {"temperature": 0.0, "seed": 7, "max_tokens": 128}
    return OpenAIChat("agent", model=server.model_name, base_url=server.base_url,
                      sampling=sampling, **options)  # type: ignore[arg-type]  # fmt: skip


def test_llm_check_passes_in_prompted_mode_and_says_so(
    model_server: LocalModelServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    llm = {
        "provider": "openai",
        "base_url": model_server.base_url,
        "model": model_server.model_name,
        "tool_calling": "auto",
        "constrained_output": True,
    }
    params.write_text(yaml.safe_dump({"llm": llm}), encoding="utf-8")
    assert main(["llm", "check", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert 'tool calling: prompted (called echo with {"text": "ping"}' in out
    assert "context window: 8192 tokens (reported by the server)" in out


def test_auto_is_probed_once_and_remembered(model_server: LocalModelServer, tmp_path: Path) -> None:
    forget_decisions()
    cache = ResponseCache(tmp_path / "llm", "read_write")
    chat = chat_on(model_server, tool_calling="auto", constrained=True, cache=cache)
    ask = [Message(role="user", content="Call the echo tool with the text 'hello'.")]
    result = asyncio.run(chat.complete(ask, [CHECK_TOOL]))
    assert chat.tool_calling == "prompted"
    assert result.text_tool_calls == 1 and result.message.tool_calls
    decisions = json.loads((tmp_path / "llm" / "tool_calling.json").read_text())
    key = f"{model_server.base_url} {model_server.model_name}"
    assert decisions[key]["mode"] == "prompted"
    forget_decisions()  # a new process reads the file instead of probing again
    again = chat_on(model_server, tool_calling="auto", constrained=True,
                    cache=ResponseCache(tmp_path / "llm", "read_only"))  # fmt: skip
    asyncio.run(again.complete(ask, [CHECK_TOOL]))
    assert again.tool_calling == "prompted"
    forget_decisions()


def test_context_window_and_the_servers_tokenizer(model_server: LocalModelServer) -> None:
    assert discover_context_window(model_server.base_url, model_server.model_name) == 8192
    assert ServerTokenizer.available(model_server.base_url)
    tokenizer = ServerTokenizer(model_server.base_url)
    messages = [
        Message(role="system", content="You summarise reports for a finance team."),
        Message(role="user", content="Summarise the attached quarterly report, please."),
    ]
    try:
        result = asyncio.run(chat_on(model_server).complete(messages, max_tokens=4))
    except MalformedResponse as cut:  # cut at 4 tokens: only the prompt count matters here
        assert cut.result is not None
        result = cut.result
    estimate = request_tokens(messages, None, tokenizer)
    # Role markers are estimated per message; the estimate stays close to the server's count.
    assert abs(estimate - result.usage.prompt_tokens) <= 8
    assert request_tokens(messages, None, CharEstimate()) > 0


def test_a_reply_cut_at_max_tokens_is_malformed(model_server: LocalModelServer) -> None:
    chat = chat_on(model_server)
    story = [Message(role="user", content="Write a long story about a lighthouse keeper.")]
    with pytest.raises(MalformedResponse) as caught:
        asyncio.run(chat.complete(story, max_tokens=8))
    assert caught.value.kind == "truncated"
    assert caught.value.result is not None and caught.value.result.usage.completion_tokens == 8


def test_the_servers_overflow_400_is_context_overflow(
    small_context_server: LocalModelServer,
) -> None:
    chat = chat_on(small_context_server)
    words = " ".join(f"word{i}" for i in range(3000))
    with pytest.raises(ContextOverflow) as caught:
        asyncio.run(chat.complete([Message(role="user", content=f"Summarise: {words}")]))
    assert caught.value.status == 400 and "context" in str(caught.value)


def test_a_long_conversation_is_compacted_to_fit_the_servers_window(
    small_context_server: LocalModelServer,
) -> None:
    from ise_core.records import FunctionCall, ToolCall

    messages = [
        Message(role="system", content="You help with files."),
        Message(role="user", content="Show me the log, then the config."),
    ]
    for index, size in enumerate((6000, 300)):
        call = ToolCall(id=f"c{index}", function=FunctionCall(name="exec", arguments="{}"))
        messages.append(Message(role="assistant", tool_calls=[call]))
        text = " ".join(f"line{i}" for i in range(size // 6))
        messages.append(Message(role="tool", tool_call_id=f"c{index}", name="exec", content=text))
    chat = chat_on(small_context_server)  # no llm.context_window: /props says 1024
    try:
        result = asyncio.run(chat.complete(messages, max_tokens=16))
    except MalformedResponse as cut:  # cut at 16 tokens is fine: the request fitted
        assert cut.result is not None
        result = cut.result
    assert result.compactions == 1 and result.usage.prompt_tokens <= 1024
