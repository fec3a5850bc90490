"""Cache writes stay off the event loop and skip fsync; dataset files keep theirs."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from ise_core.atomic import atomic_write_text
from ise_core.llm.cache import ResponseCache
from ise_core.records import Message, write_json
from tests.fakes import FakeOpenAIServer
from tests.llm.conftest import ChatMaker

ASK = [Message(role="user", content="what time is it")]


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_cache_entry_is_written_in_a_worker_thread_before_complete_returns(
    server: FakeOpenAIServer,
    make_chat: ChatMaker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writers: list[str] = []
    real_put = ResponseCache.put

    def recording_put(self: ResponseCache, *args: object, **kwargs: object) -> None:
        writers.append(threading.current_thread().name)
        real_put(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ResponseCache, "put", recording_put)
    chat = make_chat(server, cache_mode="read_write", cache_dir=tmp_path / "cache")

    async def ask() -> None:
        await chat.complete(ASK)
        # Written by the time complete() returns: a second identical request is a hit.
        assert chat.cache is not None and chat.cache.writes == 1
        again = await chat.complete(ASK)
        assert again.cached

    asyncio.run(ask())
    assert len(writers) == 1
    assert writers[0] != threading.main_thread().name  # not on the event loop's thread
    assert server.requests == 1


def test_cache_entries_are_not_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = _count_fsyncs(monkeypatch)
    cache = ResponseCache(tmp_path / "cache", "read_write")
    reply = {"message": {"role": "assistant", "content": "hi"}, "usage": {}}
    cache.put("ab" * 32, reply, model="m")
    assert fsyncs == []
    assert cache.get("ab" * 32) == reply


def test_dataset_files_are_still_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = _count_fsyncs(monkeypatch)
    write_json(tmp_path / "episode.json", {"intent_id": "x"})
    atomic_write_text(tmp_path / "card.md", "# card\n")
    assert len(fsyncs) == 2
    atomic_write_text(tmp_path / "scratch.txt", "redo me\n", durable=False)
    assert len(fsyncs) == 2
    assert (tmp_path / "scratch.txt").read_text() == "redo me\n"
