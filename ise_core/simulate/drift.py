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
``echoes_instructions``
    The message repeats the simulator's own instructions instead of speaking as the person
    ("Please write your opening message to the assistant", "as the JSON object described
    above"): it shares a run of six consecutive words with the fixed text of the user
    simulator's prompt templates (``ise_core/prompts/user_*.md``, placeholders excluded, so
    quoting the intent's own request is fine).

A user may still *ask* for things ("Could you double-check the output?", "Please run it
again") and may paste a short error; those are not drift. The detector errs towards missing
a subtle drift rather than flagging a normal request, because every hit costs a regeneration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

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
ECHO_WORDS = 6  # consecutive words shared with the instructions that count as an echo
_WORD = re.compile(r"[a-z0-9']+")
_PLACEHOLDER = re.compile(r"\{\{[^}]*\}\}")


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + ECHO_WORDS]) for i in range(len(words) - ECHO_WORDS + 1)}


@lru_cache(maxsize=1)
def _instruction_shingles() -> frozenset[tuple[str, ...]]:
    """Six-word runs of the user simulator's templates, per fixed fragment (a run never
    spans a placeholder, whose value is the intent's own text)."""
    from ise_core.simulate.prompting import PROMPTS_DIR

    found: set[tuple[str, ...]] = set()
    for path in sorted(PROMPTS_DIR.glob("user_*.md")):
        for fragment in _PLACEHOLDER.split(path.read_text(encoding="utf-8")):
            found |= _shingles(fragment)
    return frozenset(found)


def echoed_instructions(message: str) -> str | None:
    """The first run of the simulator's instructions that ``message`` repeats, or None."""
    shared = _shingles(message) & _instruction_shingles()
    if not shared:
        return None
    words = _WORD.findall(message.lower())
    for i in range(len(words) - ECHO_WORDS + 1):
        if tuple(words[i : i + ECHO_WORDS]) in shared:
            return " ".join(words[i : i + ECHO_WORDS])
    return None
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
    echo = echoed_instructions(message)
    if echo:
        hits.append(DriftHit("echoes_instructions", echo[:80]))
    return hits


def drift_rules() -> list[str]:
    """The rule names the detector can report, in order."""
    return [*(rule for rule, _ in _RULES), "echoes_instructions"]


__all__ = ["DriftHit", "detect_role_drift", "drift_rules", "echoed_instructions"]
