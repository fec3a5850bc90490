"""The episode runner: one intent, a role-locked user, a tool-using agent, a live workspace.

The user speaks first; then agent turn and user turn alternate until one of these stop
reasons:

``completed``      the user returned ``completed: true`` (its closing remark is not sent)
``empty_query``    the user returned an empty ``query`` without completing
``max_turns``      ``max_turns`` user messages were sent and the user still did not complete
``token_budget``   both roles together used ``episode_token_budget`` tokens
``time_limit``     the episode ran for ``episode_time_limit_s`` seconds (checked between steps)
``user_error``     the user simulator's output stayed invalid after its retries
``role_drift``     the user simulator kept drifting into the assistant's role after regenerations
``llm_error`` / ``workspace_error`` / ``error``
                   something failed for good; the episode's status is then ``failed``

Afterwards every check of the intent runs against the workspace's real final state.
``kept`` = completed, ``is_success`` not false, and (when ``require_checks``) all checks pass.

Reproducibility: the trajectory holds only what the run *produced* (messages, results,
counts, token usage), never how long it took; wall-clock timings are returned separately
(``EpisodeResult.timing``) and written beside the episode. With the scripted roles, a re-run
gives a byte-identical episode file.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ise_core.catalog import intent_hash
from ise_core.config import SimulateSettings
from ise_core.errors import BackendError, BudgetExceeded, LLMError
from ise_core.llm.base import Chat, Usage
from ise_core.records import CheckResult, Intent, Message, Trajectory
from ise_core.simulate.agent_loop import run_agent_turn
from ise_core.simulate.metrics import conversation_metrics
from ise_core.simulate.prompting import agent_system_prompt, user_system_prompt
from ise_core.simulate.user_sim import UserSimulator
from ise_core.workspace.base import Workspace


@dataclass
class EpisodeResult:
    """An episode's trajectory (reproducible content) and its timings (not reproducible)."""

    trajectory: Trajectory
    timing: dict[str, Any] = field(default_factory=dict)


def _usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, LLMError):
        return "llm_error"
    if isinstance(exc, BackendError):
        return "workspace_error"
    return "error"


@dataclass
class _Clock:
    limit_s: float
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def expired(self) -> bool:
        return self.elapsed() >= self.limit_s


async def run_episode(
    intent: Intent,
    *,
    user: Chat,
    agent: Chat,
    workspace: Workspace,
    settings: SimulateSettings,
    session_id: str | None = None,
    params_fingerprint: str = "",
) -> EpisodeResult:
    """Simulate one episode for ``intent`` in ``workspace`` (opened here, closed by the caller).

    A failure inside the episode does not raise: it becomes status ``failed`` with a stop
    reason and ``metadata.error``. Two things do propagate: cancellation (Ctrl-C, a stopped
    task) and ``BudgetExceeded`` (the run's LLM budget is spent; the caller drops the episode
    unwritten so that it runs again later).
    """
    clock = _Clock(settings.episode_time_limit_s)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    timing: dict[str, Any] = {"started_at": started_at}
    messages: list[Message] = []
    tools: list[dict[str, Any]] = []
    agent_usage = Usage()
    agent_stats = {"steps": 0, "step_limit_hits": 0, "malformed_replies": 0}
    llm_agent_s = tool_s = 0.0
    simulator = UserSimulator(
        chat=user,
        system_prompt=user_system_prompt(
            intent, show_workspace_files=settings.show_workspace_files
        ),
        persona_name=intent.persona.name,
        user_retries=settings.user_retries,
        drift_retries=settings.drift_retries,
        episode_tag=intent.id,
    )

    def tokens_used() -> int:
        return simulator.usage.total_tokens + agent_usage.total_tokens

    def should_stop() -> str | None:
        budget = settings.episode_token_budget
        if budget is not None and tokens_used() >= budget:
            return "token_budget"
        if clock.expired():
            return "time_limit"
        return None

    completed = False
    is_success: bool | None = None
    closing = ""
    final_output = ""
    stop_reason = ""
    error = ""
    checks: list[CheckResult] = []
    try:
        opened = time.monotonic()
        await asyncio.to_thread(workspace.open, intent.fixtures, intent.persona)
        timing["open_s"] = round(time.monotonic() - opened, 4)
        tools = workspace.tool_schemas()
        messages.append(Message(role="system", content=agent_system_prompt(tools)))
        agent_reply: str | None = None
        user_turns = 0
        while True:
            reason = should_stop()
            if reason:
                stop_reason = reason
                break
            listing: list[str] | None = None
            if settings.show_workspace_files and agent_reply is not None:
                files = await asyncio.to_thread(workspace.list_files)
                listing = files[: settings.workspace_listing_limit]
            step = await simulator.next_turn(agent_reply, listing)
            if step.turn is None:
                stop_reason = step.stop_reason or "user_error"
                error = step.problem
                break
            if step.turn.completed:
                completed, is_success = True, step.turn.is_success
                closing = step.turn.query
                stop_reason = "completed"
                break
            if not step.turn.query:
                stop_reason = "empty_query"
                break
            if user_turns >= settings.max_turns:
                stop_reason = "max_turns"
                break
            messages.append(Message(role="user", content=step.turn.query))
            user_turns += 1
            turn = await run_agent_turn(
                agent,
                messages,
                workspace,
                tools,
                max_steps=settings.max_steps_per_turn,
                should_stop=should_stop,
                options={"episode": intent.id},
            )
            messages.extend(turn.messages)
            agent_usage = agent_usage + turn.usage
            llm_agent_s += turn.llm_seconds
            tool_s += turn.tool_seconds
            agent_stats["steps"] += turn.steps
            agent_stats["malformed_replies"] += turn.malformed_replies
            agent_stats["step_limit_hits"] += turn.stop_reason == "max_steps"
            agent_reply = turn.reply
            if turn.reply:
                final_output = turn.reply
            if turn.stop_reason not in ("answered", "max_steps"):
                stop_reason = turn.stop_reason
                break
        checked = time.monotonic()
        for check in intent.checks:
            checks.append(await asyncio.to_thread(workspace.run_check, check))
        timing["checks_s"] = round(time.monotonic() - checked, 4)
        failed = False
    except BudgetExceeded:
        raise  # the run's budget is spent: the caller abandons this episode unwritten
    except Exception as exc:  # one episode's failure must not end the run
        stop_reason = _failure_reason(exc)
        error = f"{type(exc).__name__}: {exc}"
        failed = True

    passed = sum(1 for result in checks if result.passed)
    checks_ok = passed == len(intent.checks)
    kept = (
        not failed
        and completed
        and is_success is not False
        and (checks_ok or not settings.require_checks)
    )
    status = "failed" if failed else "kept" if kept else "rejected"
    generations = simulator.generations
    drift = simulator.drift_events
    metadata: dict[str, Any] = {
        "persona": intent.persona.model_dump(mode="json"),
        "domains": list(intent.domains),
        "tasks": [task.model_dump(mode="json") for task in intent.tasks],
        "complexity": intent.complexity,
        **conversation_metrics(messages),
        "checks_passed": passed,
        "checks_total": len(intent.checks),
        "token_usage": {
            "user": _usage_dict(simulator.usage),
            "agent": _usage_dict(agent_usage),
            "total_tokens": tokens_used(),
        },
        "llm": {"user": user.name, "agent": agent.name},
        "backend": getattr(workspace, "backend", "unknown"),
        "role_drift": {
            "events": drift,
            "generations": generations,
            "rate": round(len(drift) / generations, 6) if generations else 0.0,
        },
        "user_simulator": {
            "invalid_outputs": simulator.invalid_outputs,
            "turns": simulator.turns,
            "closing": closing,
        },
        "agent": agent_stats,
        "intent_hash": intent_hash(intent),
    }
    if error:
        metadata["error"] = error[:2000]
    timing.update(
        {
            "wall_s": round(clock.elapsed(), 4),
            "user_llm_s": round(simulator.llm_seconds, 4),
            "agent_llm_s": round(llm_agent_s, 4),
            "tool_s": round(tool_s, 4),
        }
    )
    trajectory = Trajectory(
        intent_id=intent.id,
        session_id=session_id or intent.id,
        status=status,
        stop_reason=stop_reason or "error",
        completed=completed,
        is_success=is_success,
        kept=kept,
        messages=messages,
        tools=tools,
        final_output=final_output,
        checks=checks,
        metadata=metadata,
        params_fingerprint=params_fingerprint,
    )
    return EpisodeResult(trajectory, timing)


__all__ = ["EpisodeResult", "run_episode"]
