"""The scripted intent writer: a deterministic template program, not a model.

It plays the ``writer`` role of the offline ``scripted`` backend. It reads the sampled intent
from the fenced JSON block of the first user message (the block a model is shown too) and
fills sentence frames from ``ise_core/prompts/scripted_writer.yaml``. The wording varies with
the persona's communication style (keywords such as "terse", "lowercase", "rambling"),
experience level, the tasks and the complexity; concrete details (project names, file paths,
numbers, colleagues) are invented from the seeded random stream, so one sample and one seed
always give the same output.

Its executable checks stay inside a small vocabulary the scripted agent can satisfy, with paths
relative to the workspace root and free of spaces and shell metacharacters:

- ``file_exists {path}`` and ``file_contains {path, text}`` (a short literal phrase)
- ``command_succeeds {command}`` with exactly one of ``python3 P.py``, ``node P.js``,
  ``sh P.sh``, ``python3 -m json.tool P.json``, ``git -C DIR log --oneline -1``, ``test -d DIR``

Every check's path and phrase appears in a hidden detail, one detail per future user turn.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Sequence
from typing import Any

from ise_core.records import Message
from ise_core.scripted import ScriptedCall, register
from ise_core.scripted.writer_plan import (
    Artifact,
    Draft,
    invent_slots,
    join_phrases,
    phrases,
    plan_artifacts,
    task_phrase,
)

_FENCE = re.compile(r"```(?:json)?[ \t]*\n(.*?)\n[ \t]*```", re.DOTALL)
_SENTENCE_END = re.compile(r"\.(\s|$)")
# First-person task titles ("track my to-do list") read in the third person in the goal.
_THIRD_PERSON = ((" my ", " their "), (" me ", " them "), (" I ", " they "), (" we ", " they "))

# Hidden details per complexity: the scripted user reveals one per turn.
DETAIL_RANGE = {"simple": (3, 5), "medium": (5, 8), "complex": (7, 10)}


def read_sample(messages: Sequence[Message]) -> dict[str, Any] | None:
    """The sample from the first user message holding a fenced JSON object, if any."""
    for message in messages:
        if message.role != "user" or not message.content:
            continue
        match = _FENCE.search(message.content)
        if match is None:
            continue
        try:
            data = json.loads(match.group(1))
        except json.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None
    return None


@functools.lru_cache(maxsize=4096)
def style_traits(style: str) -> frozenset[str]:
    """Writing traits named by keywords in a communication style."""
    lowered = style.lower()
    return frozenset(
        trait
        for trait, words in phrases()["style_traits"].items()
        if any(word in lowered for word in words)
    )


# --- the opening request ------------------------------------------------------------------


def _greeting(draft: Draft) -> str:
    traits = draft.traits
    if traits & {"nogreet", "terse", "bluf"} and not traits & {"formal", "casual"}:
        return ""
    if "formal" in traits:
        return draft.rng.choice(draft.bank["greetings"]["formal"])
    if "casual" in traits or "emoji" in traits:
        return draft.rng.choice(draft.bank["greetings"]["casual"])
    return draft.rng.choice(draft.bank["greetings"]["plain"]) if draft.chance(0.6) else ""


def _ask(draft: Draft, mentioned: list[dict[str, Any]]) -> str:
    bank, rng = draft.bank, draft.rng
    if "lists" in draft.traits and len(mentioned) > 1:
        intro = rng.choice(bank["list_intros"])
        draft.project_named = "{proj" in intro
        intro = draft.fill(intro)
        numbered = draft.chance(0.5)
        lines = [
            f"{i}. {task_phrase(draft, task, qualify=True)}"
            if numbered
            else f"- {task_phrase(draft, task, qualify=True)}"
            for i, task in enumerate(mentioned, start=1)
        ]
        return intro + "\n" + "\n".join(lines) + "\n"
    frame = rng.choice(bank["ask_frames"])
    draft.project_named = "{proj" in frame
    draft.slots["tasks"] = join_phrases(
        draft, [task_phrase(draft, task, qualify=True) for task in mentioned]
    )
    ask = draft.fill(frame)
    if "corporate" in draft.traits and draft.chance(0.7):
        bit = draft.fill(rng.choice(bank["style_bits"]["corporate"]))
        ask = f"{ask[:-1]}, {bit}{ask[-1]}"
    if "british" in draft.traits and draft.chance(0.7):
        bit = rng.choice(bank["style_bits"]["british"])
        ask = f"{ask[:-1]}, {bit}{ask[-1]}"
    return ask


def _style_bit(draft: Draft, trait: str, p: float) -> str:
    if trait in draft.traits and draft.chance(p):
        return draft.fill(draft.rng.choice(draft.bank["style_bits"][trait]))
    return ""


def _restyle(draft: Draft, text: str) -> str:
    traits = draft.traits
    if "shorthand" in traits:
        for long, short in draft.bank["shorthand"].items():
            text = text.replace(long, short)
    if "exclaim" in traits:
        text = _SENTENCE_END.sub(
            lambda m: "!" + m.group(1) if draft.chance(0.5) else m.group(0), text
        )
    if "lower" in traits:
        text = text.lower()
    if "emoji" in traits:
        text = f"{text} {draft.rng.choice(draft.bank['style_bits']['emoji'])}"
    return text


def _request(draft: Draft, mentioned: list[dict[str, Any]], fixture: str | None) -> str:
    bank, traits, rng = draft.bank, draft.traits, draft.rng
    terse = bool(traits & {"terse", "bluf"})
    intro = ""
    if "context" in traits or "ramble" in traits or draft.chance(0.25 if terse else 0.6):
        intro = draft.fill(rng.choice(bank["intros"][draft.tier]))
    aside = ""
    if "ramble" in traits or ("context" in traits and draft.chance(0.5)):
        aside = f"Long story short, {draft.fill(rng.choice(bank['asides']))}."
    lead = " ".join(
        bit
        for bit in (
            _style_bit(draft, "hedge", 0.8),
            _style_bit(draft, "academic", 0.5),
            _style_bit(draft, "aloud", 0.6),
        )
        if bit
    )
    ask = _ask(draft, mentioned)
    if lead and not ask.startswith(("-", "1.")) and "\n" not in ask:
        joins_sentence = lead.endswith((",", "but")) and not ask.startswith(("I ", "I'"))
        ask = f"{lead} {ask[0].lower()}{ask[1:]}" if joins_sentence else f"{lead} {ask}"
    elif lead:
        ask = f"{lead} {ask}"
    nugget = ""
    if fixture is not None and draft.chance(0.7):
        draft.slots["fixture"] = fixture
        broken = fixture in draft.slots.get("deliverable_paths", "").split()
        frames = bank["fixture_fix_nuggets" if broken else "fixture_nuggets"]
        nugget = draft.fill(rng.choice(frames))
    elif draft.chance(0.2 if terse else 0.5):
        nugget = draft.fill(rng.choice(bank["nuggets"]))
    note = rng.choice(bank["complexity_notes"][draft.sample["complexity"]])
    constraint = draft.fill(rng.choice(bank["constraints"][draft.tier]))
    if draft.chance(0.6 if terse else 0.35):
        constraint = ""
    extras = [
        _style_bit(draft, trait, p)
        for trait, p in (
            ("urgent", 0.8),
            ("humor", 0.6),
            ("blunt", 0.6),
            ("skeptic", 0.7),
            ("meticulous", 0.6),
            ("technical", 0.5),
            ("numbers", 0.6),
        )
    ]
    signoff = ""
    if not terse or "formal" in traits:
        register = "formal" if "formal" in traits else "casual" if "casual" in traits else "plain"
        signoff = draft.fill(rng.choice(bank["signoffs"][register]))
    if "bluf" in traits:
        body = [ask, intro, nugget, note, constraint, *extras]
    else:
        body = [intro, aside, ask, nugget, note, constraint, *extras]
        if rng.random() < 0.3:  # some people put the details before the ask
            body = [intro, aside, nugget, ask, note, constraint, *extras]
    text = " ".join(part for part in [*body, signoff] if part)
    greeting = _greeting(draft)
    if greeting:  # "Hello," may open a letter on its own line; "hey!" runs straight on
        own_line = greeting.endswith(",") and ("formal" in draft.traits or draft.chance(0.4))
        text = greeting + ("\n" if own_line else " ") + text
    text = text.replace("\n ", "\n").strip()
    return _restyle(draft, text)


# --- the rest of the spec -----------------------------------------------------------------


def _details(draft: Draft, artifacts: list[Artifact], mentioned: set[str]) -> list[str]:
    details: list[str] = []
    for art in artifacts:
        first, folded = art.tasks[0], art.tasks[1:]
        text = art.detail
        if first["id"] not in mentioned:
            draft.slots["tasks"] = task_phrase(draft, first, qualify=False)
            text = f"{draft.fill(draft.rng.choice(draft.bank['also_frames']))} {text}"
        if folded:
            draft.slots["tasks"] = join_phrases(
                draft, [task_phrase(draft, t, qualify=False) for t in folded]
            )
            draft.slots["path"] = art.path
            text += " " + draft.fill(draft.rng.choice(draft.bank["fold_frames"]))
        details.append(text)
    low, high = DETAIL_RANGE[draft.sample["complexity"]]
    target = max(len(details), draft.rng.randint(low, high))
    pool = list(draft.bank["extra_details"])
    draft.rng.shuffle(pool)
    for frame in pool[: target - len(details)]:
        details.insert(draft.rng.randint(1, len(details)), draft.fill(frame))
    return details


def _criteria(draft: Draft, artifacts: list[Artifact]) -> list[str]:
    criteria: list[str] = []
    for art in artifacts:
        for check in art.checks:
            if check["kind"] == "command_succeeds":
                criteria.append(f"`{check['command']}` exits with status 0")
            elif check["kind"] == "file_contains":
                criteria.append(f'{check["path"]} contains "{check["text"]}"')
            else:
                criteria.append(f"{check['path']} exists")
    criteria.append(f"{draft.slots['first']} confirms the result after a final double-check")
    return criteria


def _third_person(title: str) -> str:
    padded = f" {title} "
    for first, third in _THIRD_PERSON:
        padded = padded.replace(first, third)
    return padded.strip()


def compose_intent(sample: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The intent spec (request, goal, details, criteria, checks, fixtures) for one sample."""
    bank = phrases()
    persona = sample["persona"]
    draft = Draft(sample=sample, rng=rng, bank=bank)
    draft.traits = style_traits(str(persona.get("communication_style", "")))
    draft.tier = bank["experience_tiers"].get(persona.get("experience_level"), "mid")
    invent_slots(draft)
    tasks: list[dict[str, Any]] = list(sample["tasks"])
    artifacts = plan_artifacts(draft, tasks, sample["complexity"])
    if sample["complexity"] == "simple" or "lists" in draft.traits:
        mentioned = tasks
    else:
        mentioned = tasks[: rng.randint(1, min(3, len(tasks)))]
    fixtures = [art.fixture for art in artifacts if art.fixture is not None]
    mentioned_ids = {t["id"] for t in mentioned}
    # The opener may point at a seed file, but only one belonging to a task it mentions.
    opener_fixture = next(
        (
            art.fixture["path"]
            for art in artifacts
            if art.fixture is not None and art.tasks[0]["id"] in mentioned_ids
        ),
        None,
    )
    # A seed file at a deliverable's own path is the broken thing to fix, not input data.
    draft.slots["deliverable_paths"] = " ".join(art.path for art in artifacts)
    request = _request(draft, mentioned, opener_fixture)
    draft.slots["tasks_all"] = join_phrases(draft, [_third_person(str(t["title"])) for t in tasks])
    paths = [art.path for art in artifacts]
    head = [", ".join(paths[:-1])] if len(paths) > 1 else []
    draft.slots["deliverables"] = " and ".join([*head, paths[-1]])
    return {
        "request": request,
        "goal": draft.fill(rng.choice(bank["goal_frames"])),
        "hidden_details": _details(draft, artifacts, mentioned_ids),
        "success_criteria": _criteria(draft, artifacts),
        "checks": [check for art in artifacts for check in art.checks],
        "fixtures": fixtures,
    }


@register("writer")
def scripted_writer(call: ScriptedCall) -> Message:
    """Answer the write-out request with the intent spec as a JSON object."""
    sample = read_sample(call.messages)
    if sample is None or not isinstance(sample.get("persona"), dict) or not sample.get("tasks"):
        # Not a write-out request we can read: say so; the caller counts it as invalid output.
        return Message(role="assistant", content="No sample JSON block found in the request.")
    spec = compose_intent(sample, call.rng)
    return Message(role="assistant", content=json.dumps(spec, ensure_ascii=False))
