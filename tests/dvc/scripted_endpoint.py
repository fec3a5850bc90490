"""A responder for the loopback OpenAI-compatible server that plays all three roles.

It answers each chat completion with the scripted programs (ise_core.scripted), so the
whole pipeline can run against a real HTTP endpoint through the openai SDK and the response
cache, with realistic intents and episodes, and deterministically. The role is told by the
request, as a model would see it: the writer's and the user simulator's system prompts, else
the agent. The scripted user and agent are handed the intent they work on; it is found by
its opening request in the project's intents.jsonl.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from pathlib import Path
from typing import Any

from ise_core.config import Settings, load_settings
from ise_core.records import Intent, Message, read_jsonl
from ise_core.scripted import EpisodeBrief, ScriptedChat
from tests.fakes.openai_server import completion

WRITER_MARK = "You write out one sampled intent"
USER_SIMULATOR_MARK = "You are NOT an assistant"


def _messages(request: dict[str, Any]) -> list[Message]:
    """The request's messages as records. The wire format drops a tool message's ``name``
    and ``success``; they are restored from the call it answers and its ``Error:`` prefix
    (how every failed tool call reads), as the scripted agent reads both."""
    fields = set(Message.model_fields)
    messages, names = [], {}
    for raw in request.get("messages") or []:
        data = {k: v for k, v in raw.items() if k in fields}
        for call in data.get("tool_calls") or []:
            names[call["id"]] = call["function"]["name"]
        if data.get("role") == "tool":
            data.setdefault("name", names.get(data.get("tool_call_id", "")))
            data.setdefault("success", not str(data.get("content") or "").startswith("Error:"))
        messages.append(Message.model_validate(data))
    return messages


def _same_request(text: str, intent: Intent) -> bool:
    # The scripted user may lower-case the first letter of the request (a register).
    a, b = text.strip(), intent.request.strip()
    return a[1:] == b[1:] and a[:1].lower() == b[:1].lower()


class ScriptedEndpoint:
    """``responder(request) -> completion`` for ``FakeOpenAIServer``; counts calls per role."""

    def __init__(self, params: Path) -> None:
        self.params = params
        self._intents: list[Intent] = []
        self._mtime = 0.0
        self.calls = {"writer": 0, "user": 0, "agent": 0}
        self._lock = threading.Lock()  # the server answers requests in parallel threads

    @functools.cached_property
    def settings(self) -> Settings:
        # Read at the first request: the params name the server's own address.
        return load_settings(self.params)

    def intents(self) -> list[Intent]:
        path = self.settings.path(self.settings.intents.out_dir) / "intents.jsonl"
        mtime = path.stat().st_mtime
        if mtime != self._mtime:
            self._intents, self._mtime = read_jsonl(path, Intent), mtime
        return self._intents

    def _intent_for(self, role: str, messages: list[Message]) -> Intent:
        if role == "user":
            system = messages[0].content or ""
            found = [i for i in self.intents() if i.request.strip() in system]
        else:
            opening = next((m.content or "" for m in messages if m.role == "user"), "")
            found = [i for i in self.intents() if _same_request(opening, i)]
        if len(found) != 1:
            raise AssertionError(f"{role} request matches {len(found)} intents")
        return found[0]

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        messages = _messages(request)
        system = (messages[0].content or "") if messages else ""
        if WRITER_MARK in system:
            role, brief = "writer", None
        else:
            role = "user" if USER_SIMULATOR_MARK in system else "agent"
            # What the pipeline hands a scripted user or agent.
            brief = EpisodeBrief.of(self._intent_for(role, messages), self.settings)
        with self._lock:
            self.calls[role] += 1
        chat = ScriptedChat(role, seed=self.settings.seed, brief=brief)
        result = asyncio.run(chat.complete(messages, request.get("tools")))
        reply = result.message
        calls = [json.loads(c.model_dump_json()) for c in reply.tool_calls or []]
        return completion(request, content=reply.content, tool_calls=calls or None)


__all__ = ["ScriptedEndpoint"]
