"""The offline scripted user and agent: real tool calls, real mistakes, real recoveries."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path

import pytest

from ise_core.config import Settings
from ise_core.records import Intent
from ise_core.scripted import EpisodeBrief, ScriptedChat
from ise_core.scripted.agent import build_work, classify, error_summary
from ise_core.scripted.user import PHRASES, pick_register, plan_turns
from ise_core.simulate.drift import detect_role_drift
from ise_core.simulate.episode import EpisodeResult, run_episode
from ise_core.workspace import open_workspace
from tests.simulate.helpers import local_sandbox_reason, make_intent, make_settings

needs_sandbox = pytest.mark.skipif(local_sandbox_reason() is not None, reason="no local sandbox")


def _brief(intent: Intent, settings: Settings, **shape: float) -> EpisodeBrief:
    brief = EpisodeBrief.of(intent, settings)
    return dataclasses.replace(brief, shape=brief.shape.model_copy(update=shape))


def _run(tmp_path: Path, intent: Intent, **shape: float) -> EpisodeResult:
    settings = make_settings(tmp_path)
    brief = _brief(intent, settings, **shape)
    ws = open_workspace(settings.workspace, base_dir=tmp_path)
    try:
        return asyncio.run(
            run_episode(
                intent,
                user=ScriptedChat("user", settings.seed, brief),
                agent=ScriptedChat("agent", settings.seed, brief),
                workspace=ws,
                settings=settings.simulate,
                session_id="s",
                params_fingerprint="fp",
            )
        )
    finally:
        ws.close()


def test_every_scripted_phrase_stays_in_role() -> None:
    for register_name, table in PHRASES.items():
        for kind, phrases in table.items():
            for phrase in phrases:
                text = phrase.format(d="the file goes in out/a.csv", D="X", e="boom", f="a.py")
                assert detect_role_drift(text) == [], (register_name, kind, phrase)


def test_registers_follow_the_persona_style() -> None:
    assert pick_register("terse, lowercase, no greetings") == "shorthand"
    assert pick_register("formal and polite, full sentences") == "formal"
    assert pick_register("numbered steps, very organised") == "structured"
    assert pick_register("something nobody wrote a rule for") == "plain"


@pytest.mark.parametrize("n_details", [0, 3, 8, 12])
def test_turn_plan_reveals_every_detail_within_the_turn_range(n_details: int) -> None:
    details = [f"detail {i}" for i in range(n_details)]
    for seed in range(20):
        plan = plan_turns(details, (6, 10), random.Random(seed))
        assert [d for group in plan.detail_turns for d in group] == details
        assert 6 <= plan.check_turn + 1 <= 10  # opening + detail turns + double-check


def test_agent_reads_requests_by_kind() -> None:
    assert classify("anything", 1) == "build"
    assert classify("Before we wrap up, please double-check everything", 5) == "verify"
    assert classify("Still broken. Fix it.", 6) == "fix"
    assert classify("also the output goes in `out/x.csv`", 3) == "detail"
    assert error_summary("Error: command exited with code 1\n  File x\nSyntaxError: bad") == (
        "SyntaxError: bad"
    )


def test_agent_plans_a_unit_for_each_check_target() -> None:
    intent = make_intent()
    work = build_work(_brief(intent, make_settings(Path("/tmp"))))
    artifacts = {a for unit in work.targets for a in unit.artifacts}
    assert artifacts == {"scripts/report.py", "reports/summary.md", "config/report.json"}
    assert len(work.checks) == 3 and work.recipes


@needs_sandbox
def test_scripted_episode_is_kept_recovers_real_errors_and_is_reproducible(tmp_path: Path) -> None:
    intent = make_intent()
    first = _run(tmp_path / "a", intent, mistake_rate=1.0).trajectory
    assert first.kept and first.stop_reason == "completed"
    assert all(check.passed for check in first.checks)
    meta = first.metadata
    assert 6 <= meta["user_turns"] <= 10
    assert meta["tool_errors"] >= 1 and meta["recovered_errors"] >= 1
    assert meta["role_drift"]["events"] == []
    # The errors are the sandbox's own words, quoted back in the agent's reply.
    failed = [m for m in first.messages if m.role == "tool" and m.success is False]
    replies = " ".join(m.content or "" for m in first.messages if m.role == "assistant")
    assert any(error_summary(m.content or "") in replies for m in failed)
    second = _run(tmp_path / "b", intent, mistake_rate=1.0).trajectory
    assert first.model_dump_json() == second.model_dump_json()


@needs_sandbox
def test_without_mistakes_there_are_no_tool_errors(tmp_path: Path) -> None:
    traj = _run(tmp_path, make_intent(), mistake_rate=0.0).trajectory
    assert traj.kept and traj.metadata["tool_errors"] == 0


@needs_sandbox
def test_a_check_the_agent_cannot_meet_is_reported_and_the_user_says_so(tmp_path: Path) -> None:
    from ise_core.records import Check

    intent = make_intent(
        checks=[
            Check(kind="command_succeeds", command="python3 scripts/report.py"),
            Check(kind="command_succeeds", command="test -f never/made.txt"),
        ]
    )
    traj = _run(tmp_path, intent, mistake_rate=0.0).trajectory
    users = [m.content or "" for m in traj.messages if m.role == "user"]
    replies = [m.content or "" for m in traj.messages if m.role == "assistant" and m.content]
    assert any("FAILED" in reply and "never/made.txt" in reply for reply in replies)
    assert classify(users[-1], len(users)) == "fix"  # the user asked for a fix once
    assert traj.completed and traj.is_success is False and not traj.kept
    assert [c.passed for c in traj.checks] == [True, False]
