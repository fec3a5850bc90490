"""Messages out, replies in: the OpenAI wire format and the malformed-reply contract.

Out: ``to_wire`` turns a ``Message`` into a request message with only the fields the chat
API defines (``success`` and ``reasoning_content`` are ours or the model's, and some servers
reject them on input).

In: ``stored_reply`` keeps what matters of a completion body (the first choice's message,
finish reason, usage, reported model); that is what the cache stores. ``parse_reply`` turns
it into an assistant ``Message``, or says why it cannot:

=========================  ===================================================================
kind                       when
=========================  ===================================================================
``no_choices``             the body has no choice (or the choice has no message)
``invalid_tool_call``      a tool call without a function name
``unknown_tool``           a tool call naming a tool that was not offered in ``tools``
``invalid_tool_arguments`` arguments that are not a JSON object (blank arguments mean ``{}``)
``empty``                  neither content nor tool calls
``truncated``              cut off at ``max_tokens`` (finish reason ``length``)
``repetition``             degenerate output: one piece repeated, or a run of blank lines
=========================  ===================================================================

The contract is an exception, ``MalformedResponse`` (defined here, a subclass of
``ise_core.errors.LLMError``) with ``kind``, ``detail`` and ``result``: the best-effort
``ChatResult`` whose message keeps whatever could be read (tool calls with their raw
arguments), with the usage already accounted. An exception, not an error field, so a caller
that ignores it fails the episode loudly instead of appending a broken turn. An episode
runner handles it in one place:

    try:
        result = await chat.complete(messages, tools, episode=intent_id, attempt=tries)
    except MalformedResponse as bad:
        # feed the mistake back as an observation ...
        feedback = bad.observation()          # "Error: your last reply could not be used ..."
        # ... or simply retry: ``attempt`` is part of the cache key, so the endpoint is asked
        # again instead of the cached malformed reply being replayed.
        tries += 1
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from ise_core.errors import LLMError, rebuild_error
from ise_core.llm.base import ChatResult, Usage
from ise_core.records import FunctionCall, Message, ToolCall, canonical_json

Problem = tuple[str, str]  # (kind, detail)


class MalformedResponse(LLMError):
    """The endpoint answered, but the reply cannot be used as an assistant turn.

    ``kind`` is one of ``KINDS`` (the table above); ``detail`` says what exactly was wrong.
    ``result`` is the best-effort ``ChatResult`` (usage, the raw message as far as it could be
    read), so the tokens are still accounted and the caller can show the model its own mistake.
    """

    KINDS = (
        "no_choices",
        "invalid_tool_arguments",
        "unknown_tool",
        "invalid_tool_call",
        "empty",
        "truncated",  # finish_reason "length": cut off at max_tokens
        "repetition",  # degenerate output: one piece repeated, or a run of blank lines
    )

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        result: ChatResult | None = None,
        endpoint: str = "",
        model: str = "",
    ) -> None:
        super().__init__(
            f"malformed response ({kind}) from {endpoint or 'the endpoint'}, "
            f"model {model or '?'}: {detail}",
            endpoint=endpoint,
            model=model,
            status=200,
            attempts=1,
        )
        self.kind = kind
        self.detail = detail
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (rebuild_error, (type(self), (self.kind, self.detail), self.__dict__, self.args))

    def observation(self) -> str:
        """An ``Error: ...`` text to hand back to the model as feedback on its last reply."""
        return f"Error: your last reply could not be used ({self.kind}): {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "model": self.model}


def to_wire(message: Message) -> dict[str, Any]:
    """A request message with only the chat API's own fields."""
    wire: dict[str, Any] = {"role": message.role}
    if message.role == "assistant":
        wire["content"] = message.content
        if message.tool_calls:
            wire["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    else:
        wire["content"] = message.content if message.content is not None else ""
    if message.role == "tool" and message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    if message.role in ("user", "system") and message.name:
        wire["name"] = message.name
    return wire


def tool_names(tools: Sequence[dict[str, Any]] | None) -> set[str]:
    """The function names offered in a request's ``tools``."""
    names: set[str] = set()
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def stored_reply(body: Any) -> dict[str, Any]:
    """The part of a completion body worth keeping (and caching)."""
    if not isinstance(body, dict):  # e.g. a proxy's JSON string: no message, no usage
        none = {"prompt_tokens": 0, "completion_tokens": 0}
        return {"message": None, "finish_reason": None, "usage": none, "model": None}
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    usage = body.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    stored: dict[str, Any] = {
        "message": message if isinstance(message, dict) else None,
        "finish_reason": choice.get("finish_reason") if isinstance(choice, dict) else None,
        "usage": {
            "prompt_tokens": _int(usage.get("prompt_tokens")),
            "completion_tokens": _int(usage.get("completion_tokens")),
        },
        "model": body.get("model") if isinstance(body.get("model"), str) else None,
    }
    if stored["message"] is None and "error" in body:
        # Some servers answer 200 with an error object; keep its text for the detail.
        stored["error"] = _server_error_text(body["error"])[:300]
    return stored


def _server_error_text(error: Any) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return error if isinstance(error, str) else json.dumps(error, ensure_ascii=False)


def worth_caching(stored: dict[str, Any]) -> bool:
    """A reply without any message holds no model output: it is not cached (see cache)."""
    return stored.get("message") is not None


def reply_usage(stored: dict[str, Any]) -> Usage:
    usage = stored.get("usage") or {}
    return Usage(
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
    )


def _text(value: Any) -> str | None:
    """Content as a string: some servers send a list of text parts."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [p.get("text", "") for p in value if isinstance(p, dict)]
        return "".join(part for part in parts if isinstance(part, str))
    return json.dumps(value, ensure_ascii=False)


def _arguments(raw: Any) -> tuple[str, str | None]:
    """(arguments string, problem detail or None)."""
    if isinstance(raw, dict):  # a few servers send an object instead of a JSON string
        return json.dumps(raw, ensure_ascii=False), None
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return "{}", None
    if not isinstance(raw, str):
        return json.dumps(raw), f"arguments must be a JSON object, got {type(raw).__name__}"
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        return raw, f"arguments are not valid JSON ({exc.msg} at position {exc.pos}): {raw[:120]!r}"
    if not isinstance(parsed, dict):
        return raw, f"arguments must be a JSON object, got {type(parsed).__name__}: {raw[:120]!r}"
    return raw, None


def _call_id(raw: dict[str, Any], index: int, message: dict[str, Any]) -> str:
    call_id = raw.get("id")
    if isinstance(call_id, str) and call_id:
        return call_id
    # Some servers omit ids; derive a stable one so replays stay byte-identical.
    digest = hashlib.sha256(canonical_json(message).encode("utf-8")).hexdigest()[:12]
    return f"call_{digest}_{index}"


def parse_reply(stored: dict[str, Any], offered: set[str] | None) -> tuple[Message, Problem | None]:
    """The assistant message of a stored reply and the first problem with it (or None).

    ``offered`` is the set of tool names the request offered (None or empty: no tools).
    """
    raw = stored.get("message")
    if not isinstance(raw, dict):
        error = f": {stored['error']}" if stored.get("error") else ""
        return Message(role="assistant", content=None), (
            "no_choices",
            f"the response has no choices (or its first choice has no message){error}",
        )
    problem: Problem | None = None
    calls: list[ToolCall] = []
    raw_calls = raw.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raw_calls = []
        problem = ("invalid_tool_call", "tool_calls is not a list")
    for index, raw_call in enumerate(raw_calls):
        function = raw_call.get("function") if isinstance(raw_call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            problem = problem or ("invalid_tool_call", f"tool call {index} has no function name")
            continue
        assert isinstance(function, dict) and isinstance(raw_call, dict)
        arguments, bad_arguments = _arguments(function.get("arguments"))
        calls.append(
            ToolCall(
                id=_call_id(raw_call, index, raw),
                function=FunctionCall(name=name, arguments=arguments),
            )
        )
        if problem is None and name not in (offered or set()):
            known = ", ".join(sorted(offered or ())) or "no tools were offered"
            problem = ("unknown_tool", f"tool call {index} names {name!r}; offered: {known}")
        if problem is None and bad_arguments is not None:
            problem = ("invalid_tool_arguments", f"tool call {index} ({name}): {bad_arguments}")
    content = _text(raw.get("content"))
    reasoning = _text(raw.get("reasoning_content", raw.get("reasoning")))
    message = Message(
        role="assistant",
        content=content,
        tool_calls=calls or None,
        reasoning_content=reasoning or None,
    )
    if problem is None and not calls and not (content or "").strip():
        finish = stored.get("finish_reason")
        why = f" (finish_reason {finish!r})" if finish else ""
        problem = ("empty", f"the reply has neither content nor tool calls{why}")
    if problem is not None and problem[0] != "empty" and stored.get("finish_reason") == "length":
        problem = (problem[0], f"{problem[1]} (the reply was cut off at max_tokens)")
    return message, problem
