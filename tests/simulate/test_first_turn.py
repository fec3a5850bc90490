"""simulate.first_turn: the conversation opens with the intent's written request (the default)
or with an opening the user simulator generates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ise_core.config import Settings
from ise_core.llm.base import Chat
from ise_core.records import Check
from ise_core.scripted import EpisodeBrief, ScriptedChat
from ise_core.simulate.episode import EpisodeResult
from ise_core.simulate.prompting import OPENING_SENT, OPENING_TO_WRITE
from ise_core.simulate.user_sim import OPENING_REASON, UserSimulator
from tests.simulate.helpers import (
    FakeChat,
    local_sandbox_reason,
    make_intent,
    make_settings,
    run_in_workspace,
    turn_json,
    writer_agent,
)

CHECKS = [Check(kind="file_contains", path="out/result.txt", text="42")]


def test_a_written_opening_is_sent_as_is_and_nothing_is_generated() -> None:
    chat = FakeChat([turn_json("thanks", True, True)])
    sim = UserSimulator(chat=chat, system_prompt="s", persona_name="Ana", opening=" Do it. ")
    step = asyncio.run(sim.next_turn())
    assert step.turn is not None and step.turn.query == "Do it."
    assert chat.requests == [] and sim.generations == 0
    assert sim.turns == [{"completed": False, "is_success": None, "reason": OPENING_REASON}]
    # The simulator's own history shows the opening as its first turn...
    assert [m.role for m in sim.history] == ["system", "user", "assistant"]
    assert '"query":"Do it."' in (sim.history[-1].content or "")
    # ...so its first generated turn follows it.
    closing = asyncio.run(sim.next_turn("Done."))
    assert closing.turn is not None and closing.turn.completed
    assert chat.requests[0][2].role == "assistant" and sim.generations == 1


def _episode(tmp_path: Path, user: Chat, agent: Chat, settings: Settings) -> EpisodeResult:
    return run_in_workspace(tmp_path, make_intent(checks=CHECKS), user, agent, settings)


def _agent() -> FakeChat:
    return writer_agent("42\n", "Wrote out/result.txt.")


@pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")
@pytest.mark.parametrize("mode", ["request", "generated"])
def test_the_episode_opens_as_first_turn_says(tmp_path: Path, mode: str) -> None:
    settings = make_settings(tmp_path, first_turn=mode)
    turns = [turn_json("thanks", True, True)]
    if mode == "generated":
        turns.insert(0, turn_json("please put 42 in out/result.txt"))
    user = FakeChat(turns, name="user")
    trajectory = _episode(tmp_path, user, _agent(), settings).trajectory
    assert trajectory.kept and trajectory.stop_reason == "completed"
    opening = trajectory.messages[1]
    request = make_intent().request
    assert opening.role == "user"
    assert opening.content == (request if mode == "request" else "please put 42 in out/result.txt")
    system = user.requests[0][0].content or ""
    assert (OPENING_SENT if mode == "request" else OPENING_TO_WRITE) in system
    generations = trajectory.metadata["role_drift"]["generations"]
    assert generations == (1 if mode == "request" else 2)


@pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")
def test_the_scripted_user_opens_with_the_request_in_its_own_register(tmp_path: Path) -> None:
    # The scripted user writes its opening itself (a shorthand persona lowercases it), so
    # first_turn: request leaves its episodes as they were.
    settings = make_settings(tmp_path, first_turn="request", max_turns=1)
    intent = make_intent(checks=CHECKS, style="shorthand, lowercase")
    user = ScriptedChat("user", seed=7, brief=EpisodeBrief.of(intent, settings))
    result = run_in_workspace(tmp_path, intent, user, _agent(), settings)
    opening = result.trajectory.messages[1].content or ""
    assert opening == intent.request[:1].lower() + intent.request[1:]
    assert result.trajectory.metadata["role_drift"]["generations"] >= 1
