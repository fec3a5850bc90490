"""Write-out: the scripted writer's output, retries, rejections and determinism."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ise_core.config import IntentsSettings
from ise_core.errors import BackendError
from ise_core.intents.render import (
    build_writer_messages,
    parse_writer_output,
    render_intents,
    writer_prompt,
)
from ise_core.intents.sample import sample_intents
from ise_core.intents.taxonomy import Taxonomy, load_taxonomy
from ise_core.llm.base import ChatResult, Usage
from ise_core.records import Intent, IntentSample, Message, normalize_text
from ise_core.scripted import ScriptedChat
from ise_core.scripted.writer import DETAIL_RANGE, compose_intent, read_sample
from ise_core.scripted.writer_plan import Draft, invent_slots, phrases

TAXONOMY = Path(__file__).resolve().parents[2] / "ise_core" / "taxonomy"

# The vocabulary the scripted agent satisfies (see ise_core/scripted/writer.py).
SAFE_PATH = r"[A-Za-z0-9_][A-Za-z0-9_./-]*"
COMMANDS = [
    re.compile(rf"python3 {SAFE_PATH}\.py"),
    re.compile(rf"node {SAFE_PATH}\.js"),
    re.compile(rf"sh {SAFE_PATH}\.sh"),
    re.compile(rf"python3 -m json\.tool {SAFE_PATH}\.json"),
    re.compile(rf"git -C {SAFE_PATH} log --oneline -1"),
    re.compile(rf"test -d {SAFE_PATH}"),
]
VALID_SPEC = {
    "request": "hey, can you tidy the export?",
    "goal": "Tidy the export.",
    "hidden_details": ["Save it as out/clean.csv."],
    "success_criteria": ["out/clean.csv exists"],
    "checks": [{"kind": "file_exists", "path": "out/clean.csv"}],
    "fixtures": [],
}


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy(TAXONOMY)


@pytest.fixture(scope="module")
def samples(taxonomy: Taxonomy) -> list[IntentSample]:
    return sample_intents(taxonomy, IntentsSettings(), seed=7, count=600)


@pytest.fixture(scope="module")
def rendered(samples: list[IntentSample]) -> list[Intent]:
    outcome = asyncio.run(render_intents(samples, ScriptedChat("writer", seed=7), max_attempts=3))
    assert outcome.rejected == []
    return outcome.intents


class FakeChat:
    """A Chat that replies from a script and records what it was sent."""

    name = "fake"

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.calls: list[list[Message]] = []

    async def complete(
        self, messages: Sequence[Message], tools: Any = None, **options: Any
    ) -> ChatResult:
        self.calls.append(list(messages))
        content = self.reply(len(self.calls), messages)
        return ChatResult(
            message=Message(role="assistant", content=content),
            usage=Usage(prompt_tokens=10, completion_tokens=5),
        )


def _run(samples: Sequence[IntentSample], chat: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("max_attempts", 3)
    return asyncio.run(render_intents(samples, chat, **kwargs))


# --- the scripted writer ------------------------------------------------------------------


def test_scripted_output_validates_and_checks_stay_in_vocabulary(rendered: list[Intent]) -> None:
    for intent in rendered:
        assert intent.request.strip() and intent.goal.strip()
        assert intent.writer == "scripted:writer"
        low, high = DETAIL_RANGE[intent.complexity]
        assert low <= len(intent.hidden_details) <= high, intent.id
        details = " ".join(intent.hidden_details)
        for check in intent.checks:
            if check.kind == "command_succeeds":
                assert check.command is not None
                assert any(p.fullmatch(check.command) for p in COMMANDS), check.command
                words = check.command.split()
                target = words[2] if words[0] == "git" else words[-1]
                assert target in details, (intent.id, check.command)
            else:
                assert check.path is not None and re.fullmatch(SAFE_PATH, check.path), check.path
                assert ".." not in check.path.split("/")
            if check.kind == "file_contains":
                assert check.text and check.path
                assert "\n" not in check.text and '"' not in check.text
                assert check.text in details and check.path in details, intent.id
            if check.kind == "file_exists":
                assert check.path is not None and check.path.rsplit("/", 1)[-1] in details
        for fixture in intent.fixtures:
            assert re.fullmatch(SAFE_PATH, fixture.path) and fixture.content


def test_scripted_output_varies_with_style_and_complexity(rendered: list[Intent]) -> None:
    lower = [i for i in rendered if "lowercase" in i.persona.communication_style]
    assert lower and all(i.request == i.request.lower() for i in lower)
    emoji = [i for i in rendered if "emoji" in i.persona.communication_style]
    assert emoji and all(not i.request.isascii() or ":)" in i.request for i in emoji)
    mean_details = {
        level: sum(len(i.hidden_details) for i in rendered if i.complexity == level)
        / max(1, sum(i.complexity == level for i in rendered))
        for level in ("simple", "medium", "complex")
    }
    assert mean_details["simple"] < mean_details["medium"] < mean_details["complex"]
    assert any(i.fixtures for i in rendered)
    kinds = {c.command.split()[0] for i in rendered for c in i.checks if c.command}
    assert kinds == {"python3", "node", "sh", "git", "test"}


def test_scripted_requests_are_nearly_all_distinct(rendered: list[Intent]) -> None:
    distinct = {normalize_text(i.request) for i in rendered}
    assert len(distinct) / len(rendered) >= 0.99


def test_scripted_writer_is_deterministic_per_seed(
    samples: list[IntentSample], rendered: list[Intent]
) -> None:
    again = _run(samples[:100], ScriptedChat("writer", seed=7)).intents
    assert [i.model_dump_json() for i in again] == [i.model_dump_json() for i in rendered[:100]]
    other = _run(samples[:100], ScriptedChat("writer", seed=8)).intents
    assert sum(a.request == b.request for a, b in zip(other, again, strict=True)) < 5


def test_compose_intent_alone_is_a_pure_function_of_sample_and_rng(
    samples: list[IntentSample],
) -> None:
    sample = samples[0].model_dump(mode="json")
    assert compose_intent(sample, random.Random(1)) == compose_intent(sample, random.Random(1))


def test_every_phrase_bank_slot_is_known(samples: list[IntentSample]) -> None:
    draft = Draft(sample=samples[0].model_dump(mode="json"), rng=random.Random(0), bank=phrases())
    invent_slots(draft)
    runtime = {
        "tasks": "x",
        "tasks_all": "x",
        "deliverables": "x",
        "fixture": "x",
        "path": "x",
        "command": "x",
        "text": "x",
        "a": "x",
        "b": "x",
        "head": "x",
        "last": "x",
        "proj": "x",
        "stem": "x",
    }
    draft.slots.update(runtime)

    def visit(node: Any) -> None:
        if isinstance(node, str):
            node.format_map(draft.slots)  # raises KeyError naming an unknown slot
        elif isinstance(node, dict):
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    for key, value in phrases().items():
        if key not in ("buggy_scripts", "style_traits"):
            visit(value)


def test_writer_without_a_sample_block_is_rejected_not_crashed() -> None:
    chat = ScriptedChat("writer", seed=1)
    result = asyncio.run(chat.complete([Message(role="user", content="write something")]))
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_writer_output(result.message.content or "")


# --- messages and parsing -----------------------------------------------------------------


def test_messages_carry_the_sample_as_a_fenced_json_block(samples: list[IntentSample]) -> None:
    messages = build_writer_messages(samples[3])
    system, _ = writer_prompt()
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[0].content == system and "hidden_details" in system
    assert "```json" in (messages[1].content or "")
    assert read_sample(messages) == samples[3].model_dump(mode="json")


def test_parse_tolerates_a_json_fence_and_surrounding_prose() -> None:
    body = json.dumps(VALID_SPEC)
    assert parse_writer_output(body).goal == "Tidy the export."
    assert parse_writer_output(f"```json\n{body}\n```").checks[0].path == "out/clean.csv"
    assert parse_writer_output(f"Here you go:\n{body}\nHope that helps.").request


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty reply"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (json.dumps({**VALID_SPEC, "checks": []}), "checks"),
        (json.dumps({k: v for k, v in VALID_SPEC.items() if k != "goal"}), "goal"),
        (json.dumps({**VALID_SPEC, "mood": "happy"}), "mood"),
        (json.dumps({**VALID_SPEC, "checks": [{"kind": "file_contains", "path": "a"}]}), "text"),
        (
            json.dumps({**VALID_SPEC, "checks": [{"kind": "file_exists", "path": "/etc/x"}]}),
            "relative",
        ),
        (json.dumps({**VALID_SPEC, "fixtures": [{"path": "../x", "content": "y"}]}), "relative"),
    ],
)
def test_parse_rejects_bad_output_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_writer_output(text)


# --- retries, rejections and order --------------------------------------------------------


def test_invalid_then_valid_is_retried_with_feedback_and_accepted(
    samples: list[IntentSample],
) -> None:
    chat = FakeChat(lambda n, _: "sorry, here it is: {oops" if n == 1 else json.dumps(VALID_SPEC))
    outcome = _run(samples[:1], chat)
    assert [i.id for i in outcome.intents] == [samples[0].id]
    assert outcome.rejected == [] and outcome.attempts == 2
    assert outcome.usage.total_tokens == 30
    retry = chat.calls[1]
    assert [m.role for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[2].content == "sorry, here it is: {oops"
    assert "not valid JSON" in (retry[3].content or "")
    assert outcome.intents[0].writer == "fake"
    assert outcome.intents[0].persona == samples[0].persona


def test_always_invalid_is_counted_as_rejected_without_crashing(
    samples: list[IntentSample],
) -> None:
    chat = FakeChat(lambda n, _: json.dumps({"request": "only this"}))
    outcome = _run(samples[:5], chat, max_attempts=2)
    assert outcome.intents == []
    assert [r.id for r in outcome.rejected] == [s.id for s in samples[:5]]
    for rejection in outcome.rejected:
        assert rejection.attempts == 2 and "does not match the schema" in rejection.reason
    assert len(chat.calls) == 10
    assert "RenderOutcome(intents=0, rejected=5" in repr(outcome)


def test_a_failing_call_rejects_only_that_sample(samples: list[IntentSample]) -> None:
    bad_id = samples[2].id

    def reply(_: int, messages: Sequence[Message]) -> str:
        if bad_id in (messages[1].content or ""):
            raise ConnectionError("endpoint went away")
        return json.dumps(VALID_SPEC)

    outcome = _run(samples[:5], FakeChat(reply))
    assert len(outcome.intents) == 4
    assert [(r.id, r.attempts) for r in outcome.rejected] == [(bad_id, 1)]
    assert "ConnectionError: endpoint went away" in outcome.rejected[0].reason


def test_a_backend_that_cannot_run_stops_the_stage(samples: list[IntentSample]) -> None:
    def reply(_: int, __: Sequence[Message]) -> str:
        raise BackendError("no API key in OPENAI_API_KEY")

    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        _run(samples[:3], FakeChat(reply))


def test_intents_come_back_in_sample_order_and_progress_counts(
    samples: list[IntentSample],
) -> None:
    ticks: list[int] = []

    async def jitter_reply() -> Any:
        chat = FakeChat(lambda n, _: json.dumps(VALID_SPEC))
        original = chat.complete

        async def slow(messages: Sequence[Message], tools: Any = None, **options: Any) -> Any:
            await asyncio.sleep(random.Random(len(chat.calls)).random() / 200)
            return await original(messages, tools, **options)

        chat.complete = slow  # type: ignore[method-assign]
        return await render_intents(
            samples[:40], chat, max_attempts=1, concurrency=8, progress=ticks.append
        )

    outcome = asyncio.run(jitter_reply())
    assert [i.id for i in outcome.intents] == [s.id for s in samples[:40]]
    assert sum(ticks) == 40
