"""Which tool-calling mode an endpoint and model support: the probe behind ``auto`` and
``ise llm check``.

The probe asks the model to call an ``echo`` tool, first offering it through the API's
``tools`` (``native``: the server returns structured ``tool_calls``), then, if that did not
give a structured call, with the schema in the system prompt (``prompted``: the call is read
from the reply text). The first that yields an ``echo`` call wins. A native request whose call
came back as text counts for ``prompted``: the server has no tool-call parser for this model.

``auto`` decides once per endpoint and model: the outcome is kept for the process and written
to ``tool_calling.json`` in the response cache's folder (when the cache is writable), so later
runs (and replays from the cache) use the same mode without asking again. Delete the entry,
or set ``llm.tool_calling`` explicitly, to decide again.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ise_core.atomic import atomic_write_text
from ise_core.llm.replies import MalformedResponse
from ise_core.records import Message

if TYPE_CHECKING:
    from ise_core.llm.base import ChatResult
    from ise_core.llm.cache import ResponseCache


class OpenAIChat(Protocol):
    """What the probe needs of the endpoint's chat (ise_core.llm.openai_chat.OpenAIChat,
    which calls the probe: named by its shape so the two modules do not import each other)."""

    base_url: str
    model: str
    cache: ResponseCache | None
    tool_calling: str

    async def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        **options: Any,
    ) -> ChatResult: ...

log = logging.getLogger(__name__)

CHECK_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "echo",
        "description": "Echo the given text back.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string", "description": "the text to echo"}},
            "required": ["text"],
        },
    },
}
CHECK_MESSAGES = [
    Message(role="system", content="You are a connectivity check. Use the tools you are given."),
    Message(role="user", content="Call the echo tool with the text 'ping'."),
]
DECISIONS_FILE = "tool_calling.json"


@dataclass
class ProbeOutcome:
    """The mode that worked (None: neither did), why, and the reply that decided it."""

    mode: str | None
    detail: str
    result: ChatResult | None = None

    def call_arguments(self) -> str | None:
        message = self.result.message if self.result is not None else None
        for call in (message.tool_calls if message else None) or []:
            if call.function.name == "echo":
                return call.function.arguments
        return None


async def _ask(chat: OpenAIChat, mode: str) -> tuple[ChatResult | None, str | None]:
    """One probe request in ``mode``: (result, problem or None)."""
    seat = copy.copy(chat)
    seat.tool_calling = mode
    options: dict[str, Any] = {"tool_choice": "auto"} if mode == "native" else {}
    try:
        result = await seat.complete(CHECK_MESSAGES, [CHECK_TOOL], **options)
    except MalformedResponse as bad:
        return bad.result, f"{bad.kind}: {bad.detail}"
    calls = result.message.tool_calls or []
    if not any(call.function.name == "echo" for call in calls):
        return result, "the model answered in text without calling the offered tool"
    return result, None


async def probe_tool_calling(chat: OpenAIChat) -> ProbeOutcome:
    """Try ``native``, then ``prompted``; raises ``LLMError`` when the endpoint fails."""
    native, native_problem = await _ask(chat, "native")
    if native_problem is None and native is not None and not native.text_tool_calls:
        return ProbeOutcome("native", "the server returned a structured tool call", native)
    prompted, prompted_problem = await _ask(chat, "prompted")
    if prompted_problem is None:
        why = (
            "the server returned the call as text, not as tool_calls"
            if native_problem is None
            else f"native tool calling gave no call ({native_problem})"
        )
        detail = f"{why}; the prompted call was read from the text"
        return ProbeOutcome("prompted", detail, prompted)
    return ProbeOutcome(
        None,
        f"no tool call in either mode (native: {native_problem}; prompted: {prompted_problem})",
        prompted or native,
    )


# --- auto: decided once per endpoint and model ---------------------------------------------------

_DECIDED: dict[tuple[str, str], str] = {}
_LOCKS: dict[tuple[int, str, str], asyncio.Lock] = {}


def _decisions_path(chat: OpenAIChat) -> Path | None:
    cache = chat.cache
    return cache.directory / DECISIONS_FILE if cache is not None and cache.readable else None


def _read_decisions(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _entry_key(chat: OpenAIChat) -> str:
    return f"{chat.base_url} {chat.model}"


async def resolve_auto(chat: OpenAIChat) -> str:
    """The mode ``auto`` stands for on this chat's endpoint and model (probing at most once)."""
    key = (chat.base_url, chat.model)
    if key in _DECIDED:
        return _DECIDED[key]
    lock = _LOCKS.setdefault((id(asyncio.get_running_loop()), *key), asyncio.Lock())
    async with lock:
        if key in _DECIDED:
            return _DECIDED[key]
        path = _decisions_path(chat)
        stored = _read_decisions(path).get(_entry_key(chat))
        if isinstance(stored, dict) and stored.get("mode") in ("native", "prompted"):
            _DECIDED[key] = str(stored["mode"])
            return _DECIDED[key]
        outcome = await probe_tool_calling(chat)
        mode = outcome.mode or "prompted"
        log.info(
            "llm %s model %s: tool calling %s (%s)", chat.base_url, chat.model, mode, outcome.detail
        )
        if outcome.mode is None:
            log.warning(
                "llm %s model %s: the tool-calling probe found no call in either mode; "
                "using prompted",
                chat.base_url,
                chat.model,
            )
        _DECIDED[key] = mode
        if path is not None and chat.cache is not None and chat.cache.writable:
            decisions = _read_decisions(path)
            decisions[_entry_key(chat)] = {"mode": mode, "detail": outcome.detail}
            atomic_write_text(path, json.dumps(decisions, indent=2, sort_keys=True) + "\n")
        return mode


def forget_decisions() -> None:
    """Drop the process's decisions (tests; a server restarted with another model)."""
    _DECIDED.clear()
    _LOCKS.clear()


__all__ = [
    "CHECK_MESSAGES",
    "CHECK_TOOL",
    "ProbeOutcome",
    "forget_decisions",
    "probe_tool_calling",
    "resolve_auto",
]
