"""The context window: how big it is, how full a request is, and what to cut when it is full.

- ``discover_context_window(base_url, model)``: the tokens one request may hold, as the server
  reports it. llama.cpp's ``GET /props`` gives ``n_ctx`` per slot (``-c`` split by ``-np``);
  vLLM's ``GET /v1/models`` gives ``max_model_len``. None when the server says nothing (hosted
  APIs): set ``llm.context_window`` then.
- ``TokenCounter``: a request's size in tokens. ``ServerTokenizer`` asks llama.cpp's
  ``POST /tokenize`` (the model's own tokenizer); ``CharEstimate`` counts characters / 4.
  Both add a few tokens per message for the chat template's markers.
- ``is_context_overflow(status, text)``: does a server's 400 say the request was too long?
- ``compact(messages, budget, count)``: cut older tool outputs to head and tail with a visible
  marker, oldest first, until the conversation fits ``budget`` tokens. System and user turns,
  the assistant's own words and calls, and the newest tool output are never cut.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from ise_core.records import Message

PER_MESSAGE_TOKENS = 6  # role markers and separators a chat template adds per message
CHARS_PER_TOKEN = 4
PROBE_TIMEOUT_S = 5.0
# What is kept of a compacted tool output: its first and last characters, and the marker.
KEEP_HEAD = 600
KEEP_TAIL = 400
MARKER = "\n[... {cut} characters of this output omitted to fit the context window ...]\n"
_CUT_ALREADY = "omitted to fit the context window ...]"

_OVERFLOW = re.compile(
    r"context[ _-]?(?:length|size|window)|exceed_context_size|maximum context|"
    r"too many tokens|prompt is too long|n_ctx|longer than the (?:model'?s )?(?:maximum )?context",
    re.IGNORECASE,
)


def server_root(base_url: str) -> str:
    """``http://host:port`` for ``http://host:port/v1`` (llama.cpp's /props and /tokenize)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def _get_json(url: str, body: dict[str, Any] | None = None, key: str | None = None) -> Any:
    data = json.dumps(body).encode("utf-8") if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
        return json.loads(response.read().decode("utf-8"))


def _props_window(props: Any) -> int | None:
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    for source in (settings, props):
        if isinstance(source, dict) and isinstance(source.get("n_ctx"), int):
            return int(source["n_ctx"]) or None
    return None


def _models_window(listing: Any, model: str) -> int | None:
    entries = listing.get("data") if isinstance(listing, dict) else None
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        if entry.get("id") in (model, None) or len(entries or ()) == 1:
            for key in ("max_model_len", "context_length", "context_window"):
                if isinstance(entry.get(key), int):
                    return int(entry[key])
            meta = entry.get("meta")
            if isinstance(meta, dict) and isinstance(meta.get("n_ctx_train"), int):
                continue  # llama.cpp lists the training context here, not the served one
    return None


def discover_context_window(base_url: str, model: str, key: str | None = None) -> int | None:
    """The served context window per request, or None when the server does not say.
    ``key`` is sent as a bearer token (servers started with an API key check it here too)."""
    try:
        window = _props_window(_get_json(f"{server_root(base_url)}/props", key=key))
    except (OSError, ValueError, urllib.error.URLError):
        window = None
    if window:
        return window
    try:
        return _models_window(_get_json(f"{base_url.rstrip('/')}/models", key=key), model)
    except (OSError, ValueError, urllib.error.URLError):
        return None


def is_context_overflow(status: int | str | None, text: str) -> bool:
    """Whether an error response says the request exceeded the context window."""
    return status in (400, 413, 422) and bool(_OVERFLOW.search(text or ""))


# --- counting ----------------------------------------------------------------------------------


class TokenCounter(Protocol):
    """Counts the tokens of a text (the model's tokenizer, or an estimate)."""

    name: str

    def count(self, text: str) -> int: ...


class CharEstimate:
    """Characters / 4: close for English prose and code with BPE tokenizers, a bit low for
    JSON-heavy text; requests keep a margin (see ``fits``)."""

    name = "chars/4"

    def count(self, text: str) -> int:
        return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


class ServerTokenizer:
    """llama.cpp's ``POST /tokenize``: the served model's own tokenizer. Falls back to the
    estimate for a text the server does not answer for."""

    name = "server"

    def __init__(self, base_url: str) -> None:
        self.url = f"{server_root(base_url)}/tokenize"
        self.fallback = CharEstimate()
        self._count = lru_cache(maxsize=4096)(self._ask)

    def _ask(self, text: str) -> int:
        try:
            reply = _get_json(self.url, {"content": text})
        except (OSError, ValueError, urllib.error.URLError):
            return self.fallback.count(text)
        tokens = reply.get("tokens") if isinstance(reply, dict) else None
        return len(tokens) if isinstance(tokens, list) else self.fallback.count(text)

    def count(self, text: str) -> int:
        return int(self._count(text))

    @staticmethod
    def available(base_url: str) -> bool:
        try:
            reply = _get_json(f"{server_root(base_url)}/tokenize", {"content": "ok"})
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return isinstance(reply, dict) and isinstance(reply.get("tokens"), list)


def message_text(message: Message) -> str:
    parts = [message.content or "", message.reasoning_content or ""]
    for call in message.tool_calls or []:
        parts.append(f"{call.function.name} {call.function.arguments}")
    return "\n".join(part for part in parts if part)


def request_tokens(
    messages: Sequence[Message],
    tools: Sequence[dict[str, Any]] | None,
    counter: TokenCounter,
) -> int:
    """The estimated prompt size of one request."""
    total = sum(counter.count(message_text(m)) + PER_MESSAGE_TOKENS for m in messages)
    if tools:
        total += counter.count(json.dumps(list(tools), ensure_ascii=False))
    return total


# --- per endpoint, decided once ------------------------------------------------------------------

_WINDOWS: dict[tuple[str, str], int | None] = {}
_COUNTERS: dict[str, TokenCounter] = {}


def endpoint_window(base_url: str, model: str, key: str | None = None) -> int | None:
    """``discover_context_window`` asked once per endpoint and model in this process."""
    entry = (base_url, model)
    if entry not in _WINDOWS:
        _WINDOWS[entry] = discover_context_window(base_url, model, key)
    return _WINDOWS[entry]


def endpoint_counter(base_url: str) -> TokenCounter:
    """The server's tokenizer where it has one (llama.cpp), else characters / 4."""
    if base_url not in _COUNTERS:
        available = ServerTokenizer.available(base_url)
        _COUNTERS[base_url] = ServerTokenizer(base_url) if available else CharEstimate()
    return _COUNTERS[base_url]


def reply_budget(window: int, max_tokens: int | None) -> int:
    """Prompt tokens a request may hold: the window less the reply and a margin for the
    estimate's error (5%, at least 32 tokens)."""
    margin = max(32, window // 20)
    return max(0, window - int(max_tokens or 0) - margin)


# --- compaction --------------------------------------------------------------------------------


@dataclass
class Compaction:
    """The conversation as it will be sent, and which tool outputs were cut to get there
    (``cut``: their positions in the conversation, each cut by ``cut_output``)."""

    messages: list[Message]
    cut: list[int]
    tokens: int
    fits: bool

    @property
    def compacted(self) -> int:
        return len(self.cut)


def cut_output(text: str, head: int = KEEP_HEAD, tail: int = KEEP_TAIL) -> str:
    """``text`` cut to its head and tail with the marker between them."""
    cut = len(text) - head - tail
    if cut <= len(MARKER) or _CUT_ALREADY in text:
        return text
    return text[:head] + MARKER.format(cut=cut) + text[-tail:]


def compact(
    messages: Sequence[Message],
    budget: int,
    count: Callable[[Sequence[Message]], int],
) -> Compaction:
    """Cut older tool outputs (oldest first) until ``count(messages) <= budget``.

    The newest tool output is kept whole: the model is about to act on it. An output already
    cut is not cut again. ``fits`` is False when even the fully compacted conversation is over
    the budget (the caller then stops the episode).
    """
    current = list(messages)
    tokens = count(current)
    if tokens <= budget:
        return Compaction(current, [], tokens, True)
    tool_positions = [i for i, m in enumerate(current) if m.role == "tool" and m.content]
    cut: list[int] = []
    for position in tool_positions[:-1]:
        original = current[position].content or ""
        shorter = cut_output(original)
        if shorter == original:
            continue
        current[position] = current[position].model_copy(update={"content": shorter})
        cut.append(position)
        tokens = count(current)
        if tokens <= budget:
            return Compaction(current, cut, tokens, True)
    return Compaction(current, cut, tokens, tokens <= budget)


def apply_cuts(messages: Sequence[Message], cut: Sequence[int]) -> list[Message]:
    """``messages`` with the tool outputs at the positions ``cut`` cut as ``compact`` cuts
    them: what a model was sent, rebuilt from the full record (ise_core.export)."""
    positions = set(cut)
    return [
        m.model_copy(update={"content": cut_output(m.content)})
        if i in positions and m.role == "tool" and m.content
        else m
        for i, m in enumerate(messages)
    ]


__all__ = [
    "MARKER",
    "CharEstimate",
    "Compaction",
    "ServerTokenizer",
    "TokenCounter",
    "apply_cuts",
    "compact",
    "cut_output",
    "discover_context_window",
    "endpoint_counter",
    "endpoint_window",
    "is_context_overflow",
    "reply_budget",
    "request_tokens",
    "server_root",
]
