"""A planted API key goes only into the Authorization header: no log, error, file or repr."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from ise_core.errors import LLMError
from ise_core.llm.accounting import Accountant
from ise_core.records import Message, write_json
from tests.fakes import FakeOpenAIServer, Faults, Reply
from tests.llm.conftest import ECHO_TOOL, PLANTED_KEY, ChatMaker


def files_containing(root: Path, secret: str) -> list[Path]:
    return [
        path for path in root.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()
    ]


def test_key_reaches_the_server_only_in_the_authorization_header(
    server: FakeOpenAIServer, make_chat: ChatMaker
) -> None:
    asyncio.run(make_chat(server).complete([Message(role="user", content="hi")], [ECHO_TOOL]))
    [headers] = server.headers
    carrying = {name.lower() for name, value in headers.items() if PLANTED_KEY in value}
    assert carrying == {"authorization"}
    assert headers.get("authorization", headers.get("Authorization")) == f"Bearer {PLANTED_KEY}"
    assert PLANTED_KEY not in str(server.bodies)


def test_key_in_no_log_error_cache_or_output_file(
    make_chat: ChatMaker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, including the SDK's and the HTTP client's

    def echo_auth_back(request: dict[str, Any]) -> Reply:
        # A hostile or careless proxy that echoes the request's credentials in its error.
        return Reply(401, {"error": {"message": f"invalid key {PLANTED_KEY}"}})

    accountant = Accountant()
    faults = Faults(script=["rate_limit", "server_error", "drop", "ok"])
    with FakeOpenAIServer(faults=faults) as server:
        chat = make_chat(server, cache_mode="read_write", accountant=accountant)
        asyncio.run(chat.complete([Message(role="user", content="hi")], [ECHO_TOOL]))
        asyncio.run(chat.complete([Message(role="user", content="hi")], [ECHO_TOOL]))  # a hit
        assert repr(chat).count(PLANTED_KEY) == 0
        assert PLANTED_KEY not in str(vars(chat))
    hostile_chat_ask = [Message(role="user", content="x")]
    with FakeOpenAIServer(echo_auth_back) as hostile, pytest.raises(LLMError) as caught:
        asyncio.run(make_chat(hostile, accountant=accountant).complete(hostile_chat_ask))
    error = caught.value
    assert "401 Unauthorized" in str(error) and "ISE_TEST_LLM_KEY" in str(error)
    assert PLANTED_KEY not in str(error) and PLANTED_KEY not in repr(error)
    assert error.__cause__ is None or PLANTED_KEY not in str(error.__cause__)
    write_json(tmp_path / "stats.json", accountant.snapshot())
    assert caplog.records, "the run should have logged its retries"
    assert all(PLANTED_KEY not in record.getMessage() for record in caplog.records)
    assert PLANTED_KEY not in caplog.text
    assert files_containing(tmp_path, PLANTED_KEY) == []
    assert list((tmp_path / "llm-cache").rglob("*.json"))  # the cache was written and checked
