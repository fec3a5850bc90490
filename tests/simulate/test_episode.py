"""The episode runner with fake chats in the real local sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from ise_core.config import Settings
from ise_core.errors import LLMError
from ise_core.llm.base import Chat
from ise_core.records import Check
from ise_core.simulate.episode import EpisodeResult
from tests.simulate.helpers import (
    FakeChat,
    local_sandbox_reason,
    make_intent,
    make_settings,
    run_in_workspace,
    turn_json,
    writer_agent,
)

pytestmark = pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")

CHECKS = [
    Check(kind="file_contains", path="out/result.txt", text="42"),
    Check(kind="command_succeeds", command="test -d out"),
]


def _episode(
    tmp_path: Path, user: Chat, agent: Chat, settings: Settings | None = None, checks=CHECKS
) -> EpisodeResult:  # type: ignore[no-untyped-def]
    settings = settings or make_settings(tmp_path)
    intent = make_intent(checks=checks)
    return run_in_workspace(
        tmp_path, intent, user, agent, settings, session_id="s-1", params_fingerprint="fp"
    )


def _writer_agent(value: str) -> FakeChat:
    return writer_agent(f"answer {value}\n", f"Wrote out/result.txt with {value}.")


def _user(*turns: str) -> FakeChat:
    return FakeChat(list(turns), name="user")


def test_completed_episode_is_kept_when_real_checks_pass(tmp_path: Path) -> None:
    user = _user(turn_json("write the answer"), turn_json("thanks", True, True))
    result = _episode(tmp_path, user, _writer_agent("42"))
    traj = result.trajectory
    assert traj.stop_reason == "completed" and traj.kept and traj.status == "kept"
    assert [c.passed for c in traj.checks] == [True, True]
    assert traj.messages[0].role == "system" and "exec" in (traj.messages[0].content or "")
    assert traj.final_output == "Wrote out/result.txt with 42."
    meta = traj.metadata
    assert (meta["user_turns"], meta["tool_calls"], meta["distinct_tools"]) == (1, 1, 1)
    assert meta["dialogue_turns"] == 4  # user, assistant(tool call), tool, assistant
    assert meta["token_usage"]["total_tokens"] == 60  # 2 user + 2 agent calls
    assert meta["backend"] == "local" and meta["persona"]["name"] == "Ana Ruiz"
    assert "wall_s" in result.timing and "wall_s" not in meta


def test_checks_see_the_real_final_state(tmp_path: Path) -> None:
    user = _user(turn_json("write the answer"), turn_json("thanks", True, True))
    traj = _episode(tmp_path, user, _writer_agent("41")).trajectory
    assert [c.passed for c in traj.checks] == [False, True]
    assert traj.completed and not traj.kept and traj.status == "rejected"
    relaxed = make_settings(tmp_path / "b", require_checks=False)
    user = _user(turn_json("write the answer"), turn_json("thanks", True, True))
    assert _episode(tmp_path / "b", user, _writer_agent("41"), relaxed).trajectory.kept


def test_is_success_false_is_not_kept(tmp_path: Path) -> None:
    user = _user(turn_json("write the answer"), turn_json("not what I wanted", True, False))
    traj = _episode(tmp_path, user, _writer_agent("42")).trajectory
    assert traj.completed and traj.is_success is False and not traj.kept


@pytest.mark.parametrize(
    ("user_turns", "stop"),
    [
        ([turn_json("go"), turn_json("")], "empty_query"),
        (["garbage"], "user_error"),
        ([turn_json("How can I help you?")], "role_drift"),
    ],
)
def test_user_side_stop_reasons(tmp_path: Path, user_turns: list[str], stop: str) -> None:
    traj = _episode(tmp_path, _user(*user_turns), _writer_agent("42")).trajectory
    assert traj.stop_reason == stop and not traj.kept and traj.status == "rejected"
    if stop == "role_drift":
        assert len(traj.metadata["role_drift"]["events"]) == 3  # first try + 2 regenerations


def test_max_turns(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_turns=2)
    traj = _episode(tmp_path, _user(turn_json("again")), _writer_agent("42"), settings).trajectory
    assert traj.stop_reason == "max_turns" and traj.metadata["user_turns"] == 2


def test_token_budget_and_time_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, episode_token_budget=40)
    traj = _episode(tmp_path, _user(turn_json("again")), _writer_agent("42"), settings).trajectory
    assert traj.stop_reason == "token_budget"
    settings = make_settings(tmp_path / "t", episode_time_limit_s=0.001)
    traj = _episode(
        tmp_path / "t", _user(turn_json("go")), _writer_agent("42"), settings
    ).trajectory
    assert traj.stop_reason == "time_limit"


class _Broken:
    name = "broken"

    async def complete(self, messages, tools=None, **options):  # type: ignore[no-untyped-def]
        raise LLMError("endpoint down after 6 attempts", status=503, attempts=6)


def test_an_llm_failure_is_a_failed_episode_not_a_crash(tmp_path: Path) -> None:
    traj = _episode(tmp_path, _user(turn_json("go")), _Broken()).trajectory  # type: ignore[arg-type]
    assert traj.status == "failed" and traj.stop_reason == "llm_error"
    assert "endpoint down" in traj.metadata["error"]
    assert [m.role for m in traj.messages] == ["system", "user"]
