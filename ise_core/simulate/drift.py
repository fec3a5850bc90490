"""Role-drift detector: does a simulated *user* message sound like the assistant?

The user simulator must speak only as the person who owns the task. A message "drifts" when
it slips into the assistant's role. The detector is a set of documented, case-insensitive
heuristics, each with a rule name that is recorded with the event:

``offers_help``
    The message offers assistance: "How can I help", "How may I assist", "Is there anything
    else I can do", "I'd be happy to help", "Let me know if you need anything".
``asks_what_user_wants``
    The message asks the other side what *it* wants, as an assistant clarifying a request
    would: "Could you specify/clarify …", "Could you provide more details", "What would you
    like me to …", "Would you like me to …", "Do you want me to …", "What exactly do you need".
``narrates_tool_use``
    The message narrates doing the work, as the agent would: "I'll run …", "Let me check/run/
    open/create …", "I have created/written/executed …", "Running `…`", "Here is the script/
    output/updated file …", or a raw tool invocation such as ``exec(`` or ``{"command": …}``.
``answers_own_request``
    The message does the work itself instead of asking for it: it opens like an assistant's
    answer ("Sure, here…", "Certainly!", "Of course!", "Great question") or carries a fenced
    code block of four or more lines.

A user may still *ask* for things ("Could you double-check the output?", "Please run it
again") and may paste a short error; those are not drift. The detector errs towards missing
a subtle drift rather than flagging a normal request, because every hit costs a regeneration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FLAGS = re.IGNORECASE

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "offers_help",
        re.compile(
            r"\bhow (?:can|may|could) i (?:help|assist)\b"
            r"|\bwhat can i (?:do|help you with)\b"
            r"|\b(?:is there )?anything else i can (?:help|do|assist)\b"
            r"|\bi(?:'d| would) be (?:happy|glad) to (?:help|assist)\b"
            r"|\bhappy to help\b"
            r"|\blet me know if you (?:need|have|want) (?:anything|any (?:other|further|more))\b"
            r"|\bi can help you (?:with|to)\b",
            _FLAGS,
        ),
    ),
    (
        "asks_what_user_wants",
        re.compile(
            r"\bcould you (?:please )?(?:specify|clarify|elaborate)\b"
            r"|\bcould you (?:please )?(?:provide|share|give me) (?:more|some|additional) "
            r"(?:details|information|context)\b"
            r"|\bcan you tell me more about what you\b"
            r"|\bwhat would you like (?:me )?to\b"
            r"|\bwould you like me to\b"
            r"|\bdo you want me to\b"
            r"|\bshould i (?:go ahead|proceed)\b"
            r"|\bwhat exactly do you (?:need|want)\b"
            r"|\bwhich (?:one|option|file|format) would you (?:like|prefer)\b",
            _FLAGS,
        ),
    ),
    (
        "narrates_tool_use",
        re.compile(
            # "I'll run it myself" is the person speaking, not the agent narrating.
            r"\bi(?:'ll| will) (?:now )?(?:run|execute|create|write|open|edit|install|fetch)\b"
            r"(?![^.!?\n]{0,80}\bmyself\b)"
            r"|\blet me (?:now )?(?:check|run|execute|create|write|open|read|look|try|edit|"
            r"fix|verify|search|fetch|start|inspect)\b"
            r"|\bi(?:'ve| have) (?:now |just )?(?:created|written|executed|fixed|edited|"
            r"installed)\b"
            r"|^\s*(?:running|executing|creating|writing) [`'\"]"
            r"|\bhere(?: is|'s) (?:the|your) (?:(?:updated|final|new|revised) "
            r"(?:file|version|script|code)|script|code|output|results?|solution|"
            r"implementation|changes)\b"
            r"|\b(?:exec|process|memory_get|memory_search|web_fetch)\s*\("
            r"|\{\s*\"(?:command|path|action)\"\s*:",
            _FLAGS | re.MULTILINE,
        ),
    ),
    (
        "answers_own_request",
        re.compile(
            r"^\s*(?:sure[,!]? here|certainly[.!,]|of course[.!,]|absolutely[.!,]|"
            r"great question)",
            _FLAGS,
        ),
    ),
)

_FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
_MIN_CODE_LINES = 4


@dataclass(frozen=True)
class DriftHit:
    """One rule that fired, with the text that made it fire."""

    rule: str
    excerpt: str


_CODE_SPAN = re.compile(r"`[^`\n]*`")


def detect_role_drift(message: str) -> list[DriftHit]:
    """Every drift rule that fires on ``message`` (empty list: the message stays in role).

    Inline code spans are masked first: a person quoting a command ("I'll run `make test`
    myself") is talking about it, not running it.
    """
    hits: list[DriftHit] = []
    prose = _CODE_SPAN.sub("`code`", message)
    for rule, pattern in _RULES:
        match = pattern.search(prose)
        if match:
            hits.append(DriftHit(rule, match.group(0).strip()[:80]))
    for block in _FENCE.findall(message):
        lines = [line for line in block.splitlines() if line.strip()]
        if len(lines) >= _MIN_CODE_LINES:
            if not any(hit.rule == "answers_own_request" for hit in hits):
                hits.append(DriftHit("answers_own_request", lines[0].strip()[:80]))
            break
    return hits


def drift_rules() -> list[str]:
    """The rule names the detector can report, in order."""
    return [rule for rule, _ in _RULES]


__all__ = ["DriftHit", "detect_role_drift", "drift_rules"]
