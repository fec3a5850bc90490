"""Tool calls written as text: reading them out of a reply, and the prompt that asks for them.

Many open models (and servers without a tool-call parser for them) write their calls into the
reply text instead of the API's ``tool_calls``. ``parse_text_tool_calls`` recognises:

- Hermes / Qwen blocks: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (an
  unclosed last block too: the reply may stop right after the JSON);
- fenced blocks (```` ```json ... ``` ````, ```` ```tool_call ... ``` ````, or no language)
  holding a call object or a list of them;
- bare JSON objects (or lists) in the text.

A call object is ``{"name": N, "arguments": {...}}`` (``parameters`` is accepted for
``arguments``), the OpenAI shape ``{"type": "function", "function": {...}}``, or a wrapper
``{"tool_call": {...}}`` / ``{"tool_calls": [...]}``. Several calls in one reply are kept in
order. JSON that is not call-shaped (``{"name": "Ada", "age": 3}`` in an answer) stays text.

Text that *looks* like a call but does not parse (a ``<tool_call>`` block, or an object opening
with ``"name": ..., "arguments":`` whose JSON is broken, or arguments that are not an object)
is never dropped: it becomes a ``ToolCall`` whose arguments hold the raw text under
``unparsed_text`` (still a JSON object, as the export requires), so running it yields an
``Error: ...`` observation the model sees, and it is listed in ``problems``.

``render_tools_prompt`` is the other half of the ``prompted`` mode: the tool schemas and the
call format, appended to the system prompt; ``to_prompted`` rewrites a conversation with
structured calls and tool results into plain text turns for a server that is not given
``tools``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ise_core.records import FunctionCall, Message, ToolCall

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL | re.IGNORECASE)
_FENCED = re.compile(
    r"```[ \t]*(json|tool_call|tool_code|tool|jsonc|javascript|js)?[ \t]*\n?(.*?)```",
    re.DOTALL | re.IGNORECASE,
)
# Call-like text: an object opening with a tool name followed by its arguments, or with a
# "function" / "tool_call(s)" key. A bare {"name": ...} is not enough: data has names too.
_CALL_LIKE = re.compile(
    r"\{\s*\"name\"\s*:\s*\"[^\"]{1,64}\"\s*,\s*\"(?:arguments|parameters)\"\s*:"
    r"|\{\s*\"(?:function|tool_call|tool_calls)\"\s*:",
    re.IGNORECASE,
)
_NAME = re.compile(r"\"name\"\s*:\s*\"([^\"]{1,64})\"")
UNPARSED_NAME = "unparsed_tool_call"
UNPARSED_KEY = "unparsed_text"
RAW_LIMIT = 600


@dataclass
class TextCalls:
    """What ``parse_text_tool_calls`` found in one reply."""

    calls: list[ToolCall] = field(default_factory=list)
    content: str | None = None  # the reply text without the call blocks (None when nothing is left)
    problems: list[str] = field(default_factory=list)  # call-like text that did not parse

    @property
    def recovered(self) -> int:
        """Calls read from text (including ones whose arguments will be reported as broken)."""
        return len(self.calls)


def _as_call(data: Any) -> list[tuple[str, Any]] | None:
    """(name, raw arguments) pairs if ``data`` is call-shaped, else None."""
    if isinstance(data, list):
        found = [_as_call(item) for item in data]
        if data and all(item is not None for item in found):
            return [pair for item in found if item for pair in item]
        return None
    if not isinstance(data, dict):
        return None
    if "tool_calls" in data and isinstance(data["tool_calls"], list):
        return _as_call(data["tool_calls"])
    if "tool_call" in data and isinstance(data["tool_call"], dict):
        return _as_call(data["tool_call"])
    function = data.get("function")
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return [(function["name"], function.get("arguments", function.get("parameters")))]
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    if "arguments" not in data and "parameters" not in data:
        return None
    if not set(data) <= {"name", "arguments", "parameters", "id", "type"}:
        return None
    return [(name.strip(), data.get("arguments", data.get("parameters")))]


def _arguments_text(raw: Any) -> tuple[str, str | None]:
    """(arguments as a JSON string, problem or None)."""
    if raw is None:
        return "{}", None
    if isinstance(raw, dict):
        return json.dumps(raw, ensure_ascii=False), None
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return raw, "arguments are a string that is not JSON"
        if isinstance(parsed, dict):
            return json.dumps(parsed, ensure_ascii=False), None
    return json.dumps(raw, ensure_ascii=False), (
        f"arguments must be a JSON object, got {type(raw).__name__}"
    )


def _strip_fence(text: str) -> str:
    match = _FENCED.fullmatch(text.strip())
    return match.group(2).strip() if match else text.strip()


def _loads(text: str) -> Any:
    """JSON, tolerating trailing text after one complete value (models add prose)."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        value, _ = json.JSONDecoder().raw_decode(text)
        return value


class _Reader:
    """Collects calls and problems in reply order."""

    def __init__(self, seed: str) -> None:
        self.seed = seed
        self.found: list[tuple[int, ToolCall]] = []
        self.problems: list[str] = []

    def _id(self, index: int) -> str:
        digest = hashlib.sha256(self.seed.encode("utf-8")).hexdigest()[:12]
        return f"call_{digest}_t{index}"

    def add(self, position: int, name: str, arguments: Any) -> None:
        text, problem = _arguments_text(arguments)
        if problem:
            self.problems.append(f"tool call {name!r}: {problem}")
            text = json.dumps({UNPARSED_KEY: text[:RAW_LIMIT]}, ensure_ascii=False)
        call = ToolCall(id="", function=FunctionCall(name=name, arguments=text))
        self.found.append((position, call))

    def add_unparsed(self, position: int, raw: str, why: str) -> None:
        name_match = _NAME.search(raw)
        name = name_match.group(1) if name_match else UNPARSED_NAME
        self.problems.append(f"a tool call could not be read ({why}): {raw[:160]!r}")
        # Arguments stay a JSON object (the export's contract) holding the raw text under a key
        # no tool has: running the call answers the model with an argument error.
        arguments = json.dumps({UNPARSED_KEY: raw[:RAW_LIMIT]}, ensure_ascii=False)
        call = ToolCall(id="", function=FunctionCall(name=name, arguments=arguments))
        self.found.append((position, call))

    def try_block(self, position: int, body: str, *, tagged: bool) -> bool:
        """Read one block; True when it was a call (parsed or reported)."""
        body = _strip_fence(body)
        try:
            data = _loads(body)
        except json.JSONDecodeError as exc:
            if tagged or _CALL_LIKE.search(body):
                self.add_unparsed(position, body, f"{exc.msg} at position {exc.pos}")
                return True
            return False
        pairs = _as_call(data)
        if pairs is None:
            if tagged:
                self.add_unparsed(position, body, "no tool name and arguments in it")
                return True
            return False
        for name, arguments in pairs:
            self.add(position, name, arguments)
        return True

    def calls(self) -> list[ToolCall]:
        ordered = [call for _, call in sorted(self.found, key=lambda item: item[0])]
        return [
            call.model_copy(update={"id": self._id(index)}) for index, call in enumerate(ordered)
        ]


def _bare_objects(text: str) -> list[tuple[int, int, Any | None, str]]:
    """Every top-level JSON object or list in ``text``: (start, end, value or None, raw)."""
    decoder = json.JSONDecoder()
    found: list[tuple[int, int, Any | None, str]] = []
    index = 0
    while True:
        starts = [i for i in (text.find("{", index), text.find("[", index)) if i >= 0]
        if not starts:
            return found
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            if text[start] == "{" and _CALL_LIKE.match(text, start):
                # Broken call-like JSON: report it up to the end of its line block.
                stop = text.find("\n\n", start)
                stop = len(text) if stop < 0 else stop
                found.append((start, stop, None, text[start:stop]))
                index = stop
                continue
            index = start + 1
            continue
        found.append((start, end, value, text[start:end]))
        index = end


def parse_text_tool_calls(text: str | None, seed: str = "") -> TextCalls:
    """The tool calls written in ``text``, the text without them, and what did not parse.

    Call ids are derived from ``seed`` (e.g. a hash of the request) and the text, so they are
    stable on a replay and distinct when the same text answers two different requests."""
    if not text or not text.strip():
        return TextCalls(content=text if text else None)
    reader = _Reader(f"{seed}\n{text}")
    spans: list[tuple[int, int]] = []
    for match in _TAGGED.finditer(text):
        reader.try_block(match.start(), match.group(1), tagged=True)
        spans.append(match.span())
    rest = _blank_spans(text, spans)
    for match in _FENCED.finditer(rest):
        if reader.try_block(match.start(), match.group(2), tagged=False):
            spans.append(match.span())
    rest = _blank_spans(text, spans)
    for start, end, value, raw in _bare_objects(rest):
        if value is None:
            reader.add_unparsed(start, raw, "the JSON is broken")
            spans.append((start, end))
        elif _as_call(value) is not None:
            reader.try_block(start, raw, tagged=False)
            spans.append((start, end))
    content = _blank_spans(text, spans, fill="")
    content = re.sub(r"\n{3,}", "\n\n", content).strip()
    return TextCalls(calls=reader.calls(), content=content or None, problems=reader.problems)


def _blank_spans(text: str, spans: Sequence[tuple[int, int]], fill: str = " ") -> str:
    """``text`` with each span replaced (by spaces, keeping offsets, or removed)."""
    out: list[str] = []
    last = 0
    for start, end in sorted(spans):
        if start < last:
            continue
        out.append(text[last:start])
        out.append(fill * (end - start) if fill else "")
        last = end
    out.append(text[last:])
    return "".join(out)


# --- the prompted mode: tools in the prompt, calls and results as text -----------------------


def render_tools_prompt(tools: Sequence[dict[str, Any]]) -> str:
    """The system-prompt section that describes ``tools`` and how to call them."""
    from ise_core.simulate.prompting import render_prompt

    lines = []
    for tool in tools:
        function = tool.get("function", tool)
        lines.append(
            json.dumps(
                {
                    "name": function.get("name"),
                    "description": function.get("description", ""),
                    "parameters": function.get("parameters", {}),
                },
                ensure_ascii=False,
            )
        )
    return render_prompt("tools_prompted", tools="\n".join(lines))


ANSWER_KEY = "answer"


def step_schema(tools: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A JSON schema admitting exactly one call of an offered tool, or a final answer
    ``{"answer": "..."}``: the constrained form of the prompted mode."""
    options: list[dict[str, Any]] = []
    for tool in tools:
        function = tool.get("function", tool)
        options.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": function.get("name")},
                    "arguments": function.get("parameters") or {"type": "object"},
                },
                "required": ["name", "arguments"],
            }
        )
    options.append(
        {"type": "object", "properties": {ANSWER_KEY: {"type": "string"}}, "required": [ANSWER_KEY]}
    )
    return {"anyOf": options}


def unwrap_answer(text: str | None) -> str | None:
    """The text of a constrained final answer ``{"answer": "..."}``; other text unchanged."""
    if not text or ANSWER_KEY not in text:
        return text
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(data, dict) and set(data) == {ANSWER_KEY} and isinstance(data[ANSWER_KEY], str):
        return str(data[ANSWER_KEY])
    return text


def call_as_text(call: ToolCall) -> str:
    """One structured call written the way the prompted mode asks for it."""
    try:
        arguments: Any = json.loads(call.function.arguments or "{}")
    except json.JSONDecodeError:
        arguments = call.function.arguments
    payload = json.dumps({"name": call.function.name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{payload}\n</tool_call>"


def _result_as_text(message: Message) -> str:
    return f'<tool_response name="{message.name or ""}">\n{message.content or ""}\n</tool_response>'


def to_prompted(messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> list[Message]:
    """``messages`` for a request without ``tools``: schemas in the system prompt, calls and
    results as text. Consecutive tool results become one user turn, so roles still alternate."""
    section = render_tools_prompt(tools)
    out: list[Message] = []
    if not messages or messages[0].role != "system":
        out.append(Message(role="system", content=section))
    for message in messages:
        if message.role == "system" and not out:
            out.append(Message(role="system", content=f"{message.content or ''}\n\n{section}"))
        elif message.role == "assistant" and message.tool_calls:
            parts = [message.content] if message.content else []
            parts += [call_as_text(call) for call in message.tool_calls]
            out.append(Message(role="assistant", content="\n".join(parts)))
        elif message.role == "tool":
            text = _result_as_text(message)
            if (
                out
                and out[-1].role == "user"
                and (out[-1].content or "").endswith("</tool_response>")
            ):
                out[-1] = Message(role="user", content=f"{out[-1].content}\n{text}")
            else:
                out.append(Message(role="user", content=text))
        else:
            out.append(Message(role=message.role, content=message.content, name=message.name))
    return out


__all__ = [
    "ANSWER_KEY",
    "UNPARSED_KEY",
    "UNPARSED_NAME",
    "TextCalls",
    "call_as_text",
    "parse_text_tool_calls",
    "render_tools_prompt",
    "step_schema",
    "to_prompted",
    "unwrap_answer",
]
