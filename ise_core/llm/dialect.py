"""What a reply says beyond the API's own fields: reasoning, calls written as text, run-ons.

``refine_reply`` runs on every parsed endpoint reply (ise_core.llm.replies.parse_reply) and:

1. splits reasoning from the content: a leading ``<think>…</think>`` block (or text before a
   lone ``</think>``, when the chat template opened the block) moves to ``reasoning_content``,
   after any ``reasoning_content`` the server sent itself; an unclosed ``<think>`` means the
   whole reply was reasoning;
2. recovers tool calls written in the text (ise_core.llm.toolcalls) when tools were offered and
   the reply has no structured ``tool_calls``; they become proper ``tool_calls`` and are
   counted. Call-like text that does not parse is kept as a call whose arguments are the raw
   text (so the model is told) and reported as ``invalid_tool_call``;
3. rejects replies that did not end: ``finish_reason == "length"`` (``truncated``) and
   degenerate repetition, a reply whose tail is one short piece repeated over and over, or a
   long run of blank lines (``repetition``). Both are malformed replies like any other: the
   caller retries or tells the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ise_core.llm.toolcalls import parse_text_tool_calls, unwrap_answer
from ise_core.records import Message

Problem = tuple[str, str]

_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL | re.IGNORECASE)
_OPEN_THINK = re.compile(r"^\s*<think>", re.IGNORECASE)
_CLOSE_THINK = re.compile(r"</think>\s*", re.IGNORECASE)

# Repetition: a tail made of one piece (1..MAX_UNIT characters) repeated, covering at least
# MIN_SPAN characters and MIN_REPEATS times. Legitimate text rarely repeats one piece 600
# characters long; a stuck small model does it for thousands of tokens.
MAX_UNIT = 200
MIN_SPAN = 600
MIN_REPEATS = 8
BLANK_RUN = 400
_BLANKS = re.compile(r"\s{%d,}" % BLANK_RUN)  # noqa: UP031 (a regex's braces)


def split_reasoning(content: str | None, reasoning: str | None) -> tuple[str | None, str | None]:
    """(content without reasoning, reasoning) for one reply."""
    if not content:
        return content, reasoning
    thoughts: list[str] = [reasoning] if reasoning else []
    match = _THINK.match(content)
    if match:
        thoughts.append(match.group(1).strip())
        content = content[match.end() :]
    elif _OPEN_THINK.match(content):
        thoughts.append(_OPEN_THINK.sub("", content, count=1).strip())
        content = ""
    else:
        close = _CLOSE_THINK.search(content)
        if close and "<think>" not in content[: close.start()].lower():
            thoughts.append(content[: close.start()].strip())
            content = content[close.end() :]
    joined = "\n\n".join(t for t in thoughts if t)
    return (content if content.strip() else None), (joined or None)


def repetition(text: str | None) -> str | None:
    """Why ``text`` looks degenerate (a stuck loop or a run of blanks), or None."""
    if not text or len(text) < MIN_SPAN:
        return None
    stripped = text.rstrip()
    if len(text) - len(stripped) >= BLANK_RUN or _BLANKS.search(text):
        return f"a run of {BLANK_RUN}+ blank characters"
    tail = stripped[-4 * MIN_SPAN :]
    for size in range(1, MAX_UNIT + 1):
        unit = tail[-size:]
        if not unit.strip():
            continue
        count = 1
        while tail.endswith(unit * (count + 1)):
            count += 1
        if count >= MIN_REPEATS and count * size >= MIN_SPAN:
            return f"the text {unit[:40]!r} repeated {count} times"
    return None


def _recover_calls(
    message: Message, content: str, problem: Problem | None, offered: set[str], seed: str
) -> tuple[Message, Problem | None, int]:
    """Calls written in ``content`` as tool_calls (or a constrained answer as plain text)."""
    answer = unwrap_answer(content)
    if answer != content:  # {"answer": "..."}: the constrained form of a final reply
        return message.model_copy(update={"content": answer}), problem, 0
    found = parse_text_tool_calls(content, seed)
    if not found.calls:
        return message, problem, 0
    message = message.model_copy(update={"content": found.content, "tool_calls": found.calls})
    unknown = sorted({call.function.name for call in found.calls} - offered)
    if found.problems:
        problem = ("invalid_tool_call", "; ".join(found.problems)[:600])
    elif unknown:
        known = ", ".join(sorted(offered))
        problem = ("unknown_tool", f"a call in the text names {unknown[0]!r} ({known})")
    return message, problem, len(found.calls)


@dataclass
class Refined:
    message: Message
    problem: Problem | None
    text_tool_calls: int = 0


def refine_reply(
    message: Message,
    problem: Problem | None,
    *,
    finish_reason: str | None,
    offered: set[str],
    seed: str = "",
) -> Refined:
    """Reasoning split, text-call recovery and run-on checks for one parsed reply.

    ``offered`` are the tool names the request offered (empty: no tools, no recovery);
    ``seed`` tells requests apart for the ids of recovered calls (see parse_text_tool_calls).
    """
    content, reasoning = split_reasoning(message.content, message.reasoning_content)
    message = message.model_copy(update={"content": content, "reasoning_content": reasoning})
    recovered = 0
    if offered and not message.tool_calls and content:
        message, problem, recovered = _recover_calls(message, content, problem, offered, seed)
    looped = repetition(message.content) or repetition(message.reasoning_content)
    if finish_reason == "length" and (problem is None or problem[0] == "empty"):
        problem = ("truncated", "the reply was cut off at max_tokens before it ended")
    elif looped and problem is None:
        problem = ("repetition", f"the reply degenerated into repetition ({looped})")
    return Refined(message, problem, recovered)


__all__ = ["Refined", "refine_reply", "repetition", "split_reasoning"]
