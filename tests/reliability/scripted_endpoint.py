"""A responder for the loopback OpenAI server that plays all three roles with the scripted
programs, so a whole `ise run` can go over HTTP with deterministic answers.

The role is read from the request the way a model would see it: a request with ``tools`` is
the agent, one whose system prompt says "You are NOT an assistant" is the user simulator, any
other is the intent writer. The scripted user and agent also need the intent they work on
(they have no model to read the conversation with): the user's is found by its request text,
quoted in the user simulator's system prompt; the agent's by the user's opening message,
which this responder itself produced for that intent.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from ise_core.config import Settings
from ise_core.records import Intent, Message, read_jsonl
from ise_core.scripted import EpisodeBrief, ScriptedChat
from tests.fakes.openai_server import completion

USER_MARKER = "You are NOT an assistant"


def restore_tool_fields(messages: list[Message]) -> list[Message]:
    """Put back what the wire format leaves off a tool message and the scripted agent reads:
    the tool's ``name`` (from the call it answers) and ``success`` (a failed call's result
    starts with "Error:", which is all a model gets to see as well)."""
    names: dict[str, str] = {}
    restored = []
    for message in messages:
        for call in message.tool_calls or []:
            names[call.id] = call.function.name
        if message.role == "tool":
            message = message.model_copy(
                update={
                    "name": names.get(message.tool_call_id or ""),
                    "success": not (message.content or "").startswith("Error:"),
                }
            )
        restored.append(message)
    return restored


class ScriptedEndpoint:
    """``responder(request) -> completion body`` for ``FakeOpenAIServer``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.intents_path = settings.path(settings.intents.out_dir) / "intents.jsonl"
        self._lock = threading.Lock()
        self._intents: list[Intent] | None = None
        self._by_opening: dict[str, Intent] = {}
        self.roles_seen: dict[str, int] = {"writer": 0, "user": 0, "agent": 0}

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        messages = restore_tool_fields([Message.model_validate(m) for m in request["messages"]])
        tools = request.get("tools")
        system = messages[0].content or "" if messages else ""
        role = "agent" if tools else "user" if USER_MARKER in system else "writer"
        with self._lock:
            self.roles_seen[role] += 1
        brief = None
        if role != "writer":
            brief = EpisodeBrief.of(self._intent_for(role, messages, system), self.settings)
        seed = request.get("seed", self.settings.seed)
        chat = ScriptedChat(role, seed=seed, brief=brief)
        reply = asyncio.run(chat.complete(messages, tools)).message
        if brief is not None and role == "user":
            self._remember_opening(reply, brief.intent)
        calls = [call.model_dump() for call in reply.tool_calls or []]
        return completion(request, content=reply.content, tool_calls=calls or None)

    def _all_intents(self) -> list[Intent]:
        with self._lock:
            if self._intents is None:
                self._intents = read_jsonl(self.intents_path, Intent)
            return self._intents

    def _intent_for(self, role: str, messages: list[Message], system: str) -> Intent:
        if role == "user":
            for intent in self._all_intents():
                if intent.request.strip() in system:
                    return intent
            raise LookupError("no intent's request is quoted in the user simulator's prompt")
        opening = next((m.content or "" for m in messages if m.role == "user"), "")
        with self._lock:
            found = self._by_opening.get(opening)
        if found is None:
            # simulate.first_turn: request opens with the intent's request as written.
            found = next((i for i in self._all_intents() if i.request == opening), None)
        if found is None:
            raise LookupError(f"no intent opened with {opening[:80]!r}")
        return found

    def _remember_opening(self, reply: Message, intent: Intent) -> None:
        try:
            query = json.loads(reply.content or "").get("query")
        except (ValueError, AttributeError):
            return
        if isinstance(query, str) and query:
            with self._lock:
                self._by_opening.setdefault(query, intent)


def write_http_params(project: Path, base_url: str, **llm: Any) -> Path:
    """A tiny project whose three roles all go to ``base_url``."""
    from tests.reliability.project import make_project

    return make_project(
        project,
        llm={
            "provider": "openai",
            "base_url": base_url,
            "model": "scripted-over-http",
            "cache": "off",
            **llm,
        },
        simulate={"concurrency": 6},
    )
