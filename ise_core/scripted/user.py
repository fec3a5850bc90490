"""Scripted ``user`` role: a deterministic program standing in for the role-locked simulator.

It is a program, not a model. It reads the same conversation a model would (its own earlier
JSON turns, the agent's replies as shown to the person) and is handed the intent in its
``EpisodeBrief`` so it need not parse its own prompt. A retry after a correction (invalid
JSON, role drift) is known from the ``attempt`` option, not from the correction's wording.
What it does:

1. opens with the intent's request;
2. reveals the hidden details in order, one per turn (two per turn only when there are more
   details than turns in its plan), in a register picked from the persona's communication
   style (terse, formal, casual, shorthand, technical, tentative, structured, rambling, plain);
3. reacts to the agent's last reply: acknowledges it, or points out the error the agent
   reported (quoting it), or, when there are turns to spare, asks for a look at a result;
4. asks for a double-check once the details are out, and, if the agent's verification reply
   reports a failure, asks for one fix;
5. completes, with ``is_success`` false if the agent's last reply still reports a failure.

The number of user turns is planned per intent from ``brief.shape.user_turns``
(default ``[6, 10]``) and the detail count, so the shapes of scripted episodes come from this
program and its parameters, not from a model. Every phrase is chosen to stay within the role
lock (the drift detector never fires on them).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ise_core.records import Message, canonical_json
from ise_core.scripted import EpisodeBrief, ScriptedCall, register
from ise_core.simulate.prompting import observed_reply

REGISTER_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("shorthand", ("lowercase", "shorthand", "slack", "texting", "gen-z", "abbreviation")),
    ("structured", ("bullet", "checklist", "numbered", "structured", "list-maker", "headings")),
    ("formal", ("formal", "courteous", "gracious", "letter", "legalistic", "compliance", "kindly")),
    ("tentative", ("apolog", "anxious", "hesitant", "tentative", "unsure", "softens", "sorry")),
    ("terse", ("terse", "blunt", "brisk", "clipped", "minimal", "brusque", "impatient", "urgent")),
    ("casual", ("casual", "friendly", "cheerful", "chatty", "enthusias", "warm", "exclamation")),
    ("technical", ("technical", "precise", "engineer", "numbers", "data-driven", "skeptical")),
    ("rambling", ("rambling", "story", "narrative", "thinking out loud", "stream")),
)

# Phrase tables per register: {d} a detail, {e} an error the agent reported, {f} a file name.
PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "plain": {
        "detail": ("Also, {d}.", "One more thing: {d}.", "Another detail: {d}."),
        "ack": ("Thanks, that looks right.", "Good, that works.", "Okay, got it."),
        "error": ("I see the first try hit `{e}`. Please make sure that is really fixed.",),
        "followup": (
            "Please show me what {f} looks like now.",
            "Please add a short note on how to use {f}.",
        ),
        "check": (
            "Before I sign off, please double-check everything: run it again and confirm "
            "the files are all there.",
        ),
        "fix": ("That still shows a problem. Please fix it and check again.",),
        "close": ("Thanks, that's all I needed.", "Great, that's everything."),
    },
    "terse": {
        "detail": ("Also: {d}.", "{D}.", "Next: {d}."),
        "ack": ("Fine.", "OK.", "Good."),
        "error": ("Saw `{e}`. Make sure it's fixed.",),
        "followup": ("Show me {f}.", "Add a usage note to {f}."),
        "check": ("Double-check it all. Rerun and confirm.",),
        "fix": ("Still broken. Fix it.",),
        "close": ("Done. Thanks.", "Good. That's it."),
    },
    "formal": {
        "detail": (
            "Thank you. In addition, {d}.",
            "I should also mention that {d}.",
            "Please also take into account that {d}.",
        ),
        "ack": ("Thank you, that is in order.", "Very good, thank you."),
        "error": (
            "I note that the first attempt failed with `{e}`. Please ensure this is "
            "properly resolved.",
        ),
        "followup": (
            "Please show me the current contents of {f}.",
            "Please add a brief usage note to {f}.",
        ),
        "check": (
            "Before we conclude, please double-check the work: run everything once more "
            "and confirm that all files are in place.",
        ),
        "fix": ("There still appears to be a problem. Please correct it and verify again.",),
        "close": ("Thank you, that concludes my request.", "Many thanks, that is all."),
    },
    "casual": {
        "detail": ("Oh, and {d}!", "Also — {d}.", "Forgot to say: {d}!"),
        "ack": ("Nice, thanks!", "Awesome, that works!", "Cool!"),
        "error": ("Saw it tripped on `{e}` at first — make sure that's sorted!",),
        "followup": (
            "Show me what {f} looks like now?",
            "Can you pop a little how-to note in {f}?",
        ),
        "check": (
            "Before we wrap up, can you double-check everything? Run it once more and make "
            "sure the files are all there!",
        ),
        "fix": ("Hmm, still looks broken — please fix that and check again!",),
        "close": ("Perfect, thanks so much!", "Amazing, that's everything!"),
    },
    "shorthand": {
        "detail": ("also {d}", "oh and {d}", "btw {d}"),
        "ack": ("ok thx", "nice", "cool ty"),
        "error": ("saw the `{e}` thing, make sure thats fixed",),
        "followup": ("show me {f} pls", "add a quick usage note to {f} pls"),
        "check": ("before we wrap pls double-check it all, rerun + confirm files r there",),
        "fix": ("still broken, pls fix + recheck",),
        "close": ("ok all good ty", "perfect thx"),
    },
    "technical": {
        "detail": ("Additional requirement: {d}.", "Spec detail: {d}.", "Constraint: {d}."),
        "ack": ("Confirmed, output looks correct.", "OK, that matches what I expect."),
        "error": ("The log shows `{e}` on the first run. Confirm the fix holds.",),
        "followup": ("Show me the current contents of {f}.", "Document the usage in {f}."),
        "check": (
            "Verification step: rerun everything end to end and confirm every output file "
            "exists and the scripts exit 0.",
        ),
        "fix": ("Verification still reports a failure. Fix the root cause and rerun.",),
        "close": ("Verified. Closing this out.", "Good, all requirements met."),
    },
    "tentative": {
        "detail": (
            "Sorry, one more thing — {d}, if that's okay.",
            "Maybe also {d}? Sorry!",
            "I forgot to mention, {d}, if possible.",
        ),
        "ack": ("Oh good, thank you!", "That looks right, I think — thanks!"),
        "error": (
            "I noticed it said `{e}` at first — sorry, is that fixed properly now? Please "
            "make sure.",
        ),
        "followup": (
            "Sorry, please show me what {f} looks like now.",
            "If possible, please add a small note on how to use {f}.",
        ),
        "check": (
            "Sorry to be a pain, but before we finish please double-check everything once "
            "more — run it again and make sure the files are there.",
        ),
        "fix": ("Sorry, it seems something is still failing. Please fix it and check again.",),
        "close": ("Thank you so much, that's all!", "Thanks a lot, that's everything."),
    },
    "structured": {
        "detail": ("Next point:\n- {d}", "Adding to the list:\n- {d}", "One more item:\n- {d}"),
        "ack": ("Checked off.", "Good, ticked."),
        "error": ("Noted the `{e}` failure on the first attempt.\n- Please confirm it is fixed.",),
        "followup": ("Next item:\n- show me {f}", "Next item:\n- add usage notes to {f}"),
        "check": (
            "Final item before we close:\n- double-check everything\n- rerun the scripts\n"
            "- confirm all files exist",
        ),
        "fix": ("Open item:\n- the check still fails, please fix and re-verify",),
        "close": ("All items done. Thanks.", "Everything ticked off. Thanks."),
    },
    "rambling": {
        "detail": (
            "So, thinking about it more, {d} — that matters for how we use it.",
            "Ah, and something I just remembered: {d}.",
            "The thing is, {d}, which I should have said earlier.",
        ),
        "ack": (
            "Right, that's more or less what I had in mind, thanks.",
            "Okay, good, that makes sense.",
        ),
        "error": (
            "I did notice it ran into `{e}` along the way — just want to be sure that's "
            "properly sorted now.",
        ),
        "followup": (
            "I'm curious what {f} actually looks like now, please show me.",
            "Someone else will have to use {f}, so please add a short note on using it.",
        ),
        "check": (
            "Before we call it done, please double-check the whole thing — run it again "
            "and make sure all the files ended up where they should.",
        ),
        "fix": (
            "Hmm, it sounds like something's still failing there. Please fix it and check again.",
        ),
        "close": ("Brilliant, that's everything I needed, thanks.", "Lovely, that covers it."),
    },
}

_REPORTED_ERROR = re.compile(r"(?:fail\w*|error\w*)[^`\n]{0,80}`([^`\n]{3,120})`", re.IGNORECASE)
_STILL_FAILING = re.compile(
    r"\b(?:still fail\w*|not passing|did not pass|failed check|FAILED|could not be fixed)\b"
)
_FILE_IN_TEXT = re.compile(r"`([\w./-]+\.\w{1,5})`")


def pick_register(style: str) -> str:
    lowered = style.lower()
    for name, words in REGISTER_KEYWORDS:
        if any(word in lowered for word in words):
            return name
    return "plain"


def _stable_rng(seed: int, intent_id: str) -> random.Random:
    payload = f"{seed}:{intent_id}:user-plan"
    return random.Random(int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "big"))


@dataclass(frozen=True)
class UserPlan:
    """How many turns, and which details go in which turn (index 0 is the opening)."""

    detail_turns: tuple[tuple[str, ...], ...]

    @property
    def check_turn(self) -> int:
        return len(self.detail_turns) + 1


def plan_turns(details: Sequence[str], turn_range: Sequence[int], rng: random.Random) -> UserPlan:
    """Spread ``details`` over the middle turns of a planned conversation length."""
    low, high = int(turn_range[0]), int(turn_range[1])
    natural = 2 + len(details)
    target = max(low, min(high, round((natural + rng.randint(low, high)) / 2)))
    slots = max(1, target - 2)
    groups: list[list[str]] = [[] for _ in range(slots)]
    for index, detail in enumerate(details):
        groups[index * slots // max(1, len(details))].append(detail)
    return UserPlan(tuple(tuple(group) for group in groups))


def _detail_text(detail: str, register_name: str) -> tuple[str, str]:
    text = detail.strip().rstrip(".!")
    lower = text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
    if register_name == "shorthand":
        lower = lower.lower()
    return lower, text


def _own_turns(messages: Sequence[Message]) -> list[dict[str, Any]]:
    turns = []
    for message in messages:
        if message.role != "assistant":
            continue
        try:
            data = json.loads(message.content or "")
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "query" in data:
            turns.append(data)
    return turns


def _turn(query: str, reason: str, completed: bool = False, success: bool | None = None) -> Message:
    payload = {"completed": completed, "query": query, "reason": reason, "is_success": success}
    return Message(role="assistant", content=canonical_json(payload))


def _scrub(query: str) -> str:
    """Drop the sentences the role-drift detector flags (used after a drift correction)."""
    from ise_core.simulate.drift import detect_role_drift

    sentences = re.split(r"(?<=[.!?])\s+", query)
    kept = [s for s in sentences if not detect_role_drift(s)]
    return " ".join(kept).strip() or "Please carry on with what I asked."


@register("user")
def scripted_user(call: ScriptedCall) -> Message:
    # A retry of this turn follows one correction exchange (the rejected answer and the
    # correction) per earlier attempt; the turn is planned on the conversation before them.
    corrections = 2 * call.attempt
    messages = list(call.messages[: len(call.messages) - corrections])
    reply = _scripted_turn(call.need_brief("user"), call.rng, messages)
    if not corrections:
        return reply
    data = json.loads(reply.content or "{}")
    data["query"] = _scrub(str(data.get("query", "")))
    return Message(role="assistant", content=canonical_json(data))


def _scripted_turn(brief: EpisodeBrief, rng: random.Random, messages: Sequence[Message]) -> Message:
    intent = brief.intent
    register_name = pick_register(intent.persona.communication_style)
    table = PHRASES[register_name]
    plan = plan_turns(
        list(intent.hidden_details), brief.shape.user_turns, _stable_rng(brief.seed, intent.id)
    )
    previous = _own_turns(messages)
    index = len(previous)
    if index == 0:
        request = intent.request or "I need some help with a task."
        if register_name == "shorthand":
            request = request[:1].lower() + request[1:]
        return _turn(request, "opening request")

    reply = observed_reply(messages[-1].content or "") if messages else ""
    reported = _REPORTED_ERROR.search(reply)
    still_failing = bool(_STILL_FAILING.search(reply))
    asked_fix = any(t.get("reason") == "verification reported a failure" for t in previous)
    # After the double-check: finish, or ask for one fix when verification still fails.
    if index > plan.check_turn:
        if still_failing and not asked_fix:
            return _turn(rng.choice(table["fix"]), "verification reported a failure")
        return _turn(
            rng.choice(table["close"]),
            "the assistant verified the work" if not still_failing else "it still fails",
            completed=True,
            success=not still_failing,
        )
    if index == plan.check_turn:
        return _turn(rng.choice(table["check"]), "all details given; asking for a double-check")

    details = plan.detail_turns[index - 1]
    parts: list[str] = []
    if reported:
        error = reported.group(1).strip()
        parts.append(rng.choice(table["error"]).format(e=error))
    elif details and rng.random() < 0.5:
        parts.append(rng.choice(table["ack"]))
    if details:
        # Different wordings for two details in one message.
        templates = rng.sample(table["detail"], k=len(table["detail"]))
        for index, detail in enumerate(details):
            lower, upper = _detail_text(detail, register_name)
            parts.append(templates[index % len(templates)].format(d=lower, D=upper))
        reason = "revealing the next detail"
    else:
        files = _FILE_IN_TEXT.findall(reply)
        target = files[-1] if files else "the main output file"
        parts.append(rng.choice(table["followup"]).format(f=target))
        reason = "asking to see a result"
    return _turn(" ".join(parts) if register_name != "structured" else "\n".join(parts), reason)


__all__ = ["PHRASES", "UserPlan", "pick_register", "plan_turns", "scripted_user"]
