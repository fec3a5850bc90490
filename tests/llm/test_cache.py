"""The response cache: hits send nothing, keys cover the whole request, writes are atomic."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from ise_core.llm.cache import ResponseCache, request_key
from ise_core.records import Message
from tests.fakes import FakeOpenAIServer
from tests.llm.conftest import ECHO_TOOL, ChatMaker

ASK = [Message(role="user", content="what time is it")]


def test_hit_sends_nothing_and_returns_stored_usage(
    server: FakeOpenAIServer, make_chat: ChatMaker, tmp_path: Path
) -> None:
    chat = make_chat(server, cache_mode="read_write")
    first = asyncio.run(chat.complete(ASK, [ECHO_TOOL]))
    assert server.requests == 1 and first.cached is False
    again = asyncio.run(make_chat(server, cache_mode="read_write").complete(ASK, [ECHO_TOOL]))
    assert server.requests == 1  # nothing sent
    assert again.cached is True and again.retries == 0
    assert again.usage == first.usage
    assert again.message == first.message  # the replay is identical
    entries = list((tmp_path / "llm-cache").rglob("*.json"))
    assert len(entries) == 1
    key = entries[0].stem
    assert entries[0].parent.name == key[2:4] and entries[0].parent.parent.name == key[:2]


def test_key_covers_the_whole_request(server: FakeOpenAIServer, make_chat: ChatMaker) -> None:
    chat = make_chat(server, cache_mode="read_write")
    asyncio.run(chat.complete(ASK))
    asyncio.run(chat.complete(ASK, temperature=0.9))  # other sampling
    asyncio.run(chat.complete(ASK, [ECHO_TOOL]))  # other tools
    asyncio.run(chat.complete([*ASK, Message(role="user", content="?")]))  # other messages
    asyncio.run(chat.complete(ASK, attempt=1))  # a caller-level retry
    assert server.requests == 5
    asyncio.run(chat.complete(ASK, episode="other-episode"))  # accounting tags are not the key
    assert server.requests == 5


def test_request_key_depends_on_endpoint_and_model() -> None:
    body = {"model": "a", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    base = request_key("http://h/v1", body)
    assert base == request_key("http://h/v1/", dict(body))  # trailing slash is the same endpoint
    assert base != request_key("http://other/v1", body)
    assert base != request_key("http://h/v1", {**body, "model": "b"})
    assert base != request_key("http://h/v1", body, attempt=1)


def test_read_only_reads_but_never_writes(
    server: FakeOpenAIServer, make_chat: ChatMaker, tmp_path: Path
) -> None:
    asyncio.run(make_chat(server, cache_mode="read_only").complete(ASK))
    assert not list((tmp_path / "llm-cache").rglob("*.json"))
    asyncio.run(make_chat(server, cache_mode="read_write").complete(ASK))
    reader = make_chat(server, cache_mode="read_only")
    assert asyncio.run(reader.complete(ASK)).cached is True
    assert server.requests == 2


def test_off_never_reads(server: FakeOpenAIServer, make_chat: ChatMaker) -> None:
    asyncio.run(make_chat(server, cache_mode="read_write").complete(ASK))
    result = asyncio.run(make_chat(server, cache_mode="off").complete(ASK))
    assert result.cached is False and server.requests == 2


def test_unreadable_entry_is_a_miss_and_is_rewritten(
    server: FakeOpenAIServer, make_chat: ChatMaker, tmp_path: Path
) -> None:
    asyncio.run(make_chat(server, cache_mode="read_write").complete(ASK))
    [entry] = list((tmp_path / "llm-cache").rglob("*.json"))
    entry.write_text('{"format": 1, "key": "trunc', encoding="utf-8")
    result = asyncio.run(make_chat(server, cache_mode="read_write").complete(ASK))
    assert result.cached is False and server.requests == 2
    assert json.loads(entry.read_text(encoding="utf-8"))["key"] == entry.stem


def test_no_temp_files_are_left_behind(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path, "read_write")
    for index in range(20):
        cache.put(f"{index:064x}", {"message": {"content": str(index)}, "usage": {}})
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".json")]
    assert cache.get(f"{3:064x}") == {"message": {"content": "3"}, "usage": {}}
    assert cache.stats()["writes"] == 20 and cache.stats()["hits"] == 1


WRITER = textwrap.dedent(
    """
    import sys
    from ise_core.llm.cache import ResponseCache
    cache = ResponseCache(sys.argv[1], "read_write")
    bad = 0
    for round in range(40):
        for index in range(10):
            key = f"{index:064x}"
            cache.put(key, {"message": {"content": "x" * 20000 + str(index)}, "usage": {}})
            got = cache.get(key)
            if got is None or got["message"]["content"][-1] != str(index)[-1]:
                bad += 1
    print(bad + cache.errors)
    """
)


def test_processes_sharing_a_cache_never_see_half_an_entry(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert outputs == ["0", "0", "0"]
    assert len(list(tmp_path.rglob("*.json"))) == 10
