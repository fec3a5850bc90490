from __future__ import annotations

import asyncio

import pytest

from ise_core.llm.base import ChatResult, Usage
from ise_core.records import Message
from ise_core.simulate.user_sim import UserSimulator, UserTurnError, parse_user_turn
from tests.simulate.helpers import FakeChat, turn_json


def test_parse_accepts_plain_fenced_and_wrapped_json() -> None:
    plain = parse_user_turn(turn_json("hello"))
    assert plain.query == "hello" and plain.completed is False
    fenced = parse_user_turn("```json\n" + turn_json("x", True, True) + "\n```")
    assert fenced.completed is True and fenced.is_success is True
    wrapped = parse_user_turn("Here you go: " + turn_json("y") + " bye")
    assert wrapped.query == "y"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("just some words", "not a JSON object"),
        ("[1, 2]", "expected a JSON object"),
        ('{"completed": "yes", "query": "q"}', "completed"),
        ('{"completed": false}', "query"),
        ('{"completed": false, "query": "q", "extra": 1}', "extra"),
    ],
)
def test_parse_rejects_bad_turns_with_a_reason(text: str, problem: str) -> None:
    with pytest.raises(UserTurnError, match=problem):
        parse_user_turn(text)


def _simulator(chat: FakeChat, **kwargs: int) -> UserSimulator:
    return UserSimulator(chat=chat, system_prompt="You are Ana.", persona_name="Ana", **kwargs)


def test_invalid_json_is_corrected_and_asked_again() -> None:
    chat = FakeChat(["not json", turn_json("please build the report")])
    sim = _simulator(chat)
    step = asyncio.run(sim.next_turn())
    assert step.turn is not None and step.turn.query == "please build the report"
    assert sim.invalid_outputs == 1 and sim.generations == 2
    # The retry request carried the bad answer and a correction...
    retry = chat.requests[1]
    assert retry[-2].content == "not json" and "could not be used" in (retry[-1].content or "")
    # ...but the kept history is clean: system, kickoff, the valid turn.
    assert [m.role for m in sim.history] == ["system", "user", "assistant"]


def test_invalid_json_after_all_retries_gives_user_error() -> None:
    sim = _simulator(FakeChat(["nope"]), user_retries=2)
    step = asyncio.run(sim.next_turn())
    assert step.turn is None and step.stop_reason == "user_error"
    assert sim.generations == 3


def test_drift_is_regenerated_and_recorded() -> None:
    chat = FakeChat([turn_json("How can I help you today?"), turn_json("build the report pls")])
    sim = _simulator(chat)
    step = asyncio.run(sim.next_turn())
    assert step.turn is not None and step.turn.query == "build the report pls"
    assert len(sim.drift_events) == 1 and sim.drift_events[0]["rules"] == ["offers_help"]
    assert "broke your role" in (chat.requests[1][-1].content or "")


def test_persistent_drift_ends_with_role_drift() -> None:
    sim = _simulator(FakeChat([turn_json("Let me check the logs for you.")]), drift_retries=1)
    step = asyncio.run(sim.next_turn())
    assert step.turn is None and step.stop_reason == "role_drift"
    assert len(sim.drift_events) == 2


def test_observation_shows_the_reply_and_optionally_files() -> None:
    sim = _simulator(FakeChat([turn_json("a"), turn_json("b")]))
    asyncio.run(sim.next_turn())
    asyncio.run(sim.next_turn("I wrote report.py.", ["report.py", "USER.md"]))
    shown = sim.history[-2].content or ""
    assert "I wrote report.py." in shown and "- report.py" in shown


class _Counting:
    name = "counting"

    def __init__(self) -> None:
        self.usage = Usage(prompt_tokens=3, completion_tokens=2)

    async def complete(self, messages, tools=None, **options):  # type: ignore[no-untyped-def]
        return ChatResult(
            message=Message(role="assistant", content=turn_json("q")), usage=self.usage
        )


def test_usage_is_summed() -> None:
    sim = UserSimulator(chat=_Counting(), system_prompt="s", persona_name="A")
    asyncio.run(sim.next_turn())
    asyncio.run(sim.next_turn("ok", None))
    assert sim.usage.total_tokens == 10
