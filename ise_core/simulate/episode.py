"""The episode orchestrator: one intent, a role-locked user, a tool-using agent, a live workspace.

``Orchestrator.run()`` is ``initialize`` (open the workspace, the agent's system message) →
``step`` until a stop reason is set → ``finalize`` (checks, status, typed metadata). One step
is one user turn and, unless the user stopped, one agent turn. The user speaks first: with
``simulate.first_turn: request`` (the default) its opening is the intent's written request,
sent as written; with ``generated`` the user simulator writes it. An episode ends with one
``StopReason`` (ise_core.records):

``completed``      the user returned ``completed: true`` (its closing remark is not sent)
``empty_query``    the user returned an empty ``query`` without completing
``max_turns``      ``max_turns`` user messages were sent and the user still did not complete
``token_budget``   both roles together used ``episode_token_budget`` tokens
``time_limit``     the episode ran for ``episode_time_limit_s`` seconds (checked between steps)
``user_error``     the user simulator's output stayed invalid after its retries
``role_drift``     the user simulator kept drifting into the assistant's role after regenerations
``context_overflow`` a request stayed over the model's context window after the client
                   compacted it and tried once more (the episode is rejected, not failed)
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

from pydantic import BaseModel, ConfigDict

from ise_core.catalog import intent_hash
from ise_core.config import SimulateSettings
from ise_core.errors import (
    BackendError,
    BudgetExceeded,
    ContextOverflow,
    Interrupted,
    LLMError,
)
from ise_core.llm.base import Chat, Usage, opens_with_request
from ise_core.records import (
    CheckResult,
    Complexity,
    Intent,
    Message,
    Persona,
    StopReason,
    TaskRef,
    Trajectory,
)
from ise_core.simulate.agent_loop import AgentTurn, TurnEnd, run_agent_turn
from ise_core.simulate.metrics import conversation_metrics
from ise_core.simulate.prompting import agent_system_prompt, user_system_prompt
from ise_core.simulate.user_sim import UserSimulator, UserSimulatorSummary
from ise_core.workspace.base import Workspace

# --- the episode's metadata ------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenCounts(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, usage: Usage) -> TokenCounts:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )


class TokenUsage(_Model):
    user: TokenCounts
    agent: TokenCounts
    total_tokens: int


class Seats(_Model):
    """The ``Chat`` that played each role (e.g. ``scripted:user``, a model name)."""

    user: str
    agent: str


class RoleDrift(_Model):
    events: list[dict[str, Any]]  # turn, attempt, rules, excerpt
    generations: int
    rate: float


class UserSimulatorStats(_Model):
    invalid_outputs: int
    turns: list[dict[str, Any]]  # completed, is_success, reason per accepted turn
    closing: str


class AgentStats(_Model):
    steps: int = 0
    step_limit_hits: int = 0
    malformed_replies: int = 0


class ContextView(_Model):
    """What the model saw for one reply whose request was compacted: ``reply`` is the
    assistant message's position in the episode's ``messages``, ``cut`` the positions of the
    tool outputs that request sent cut to head and tail (ise_core.llm.context.apply_cuts
    rebuilds them from the full record)."""

    reply: int
    cut: list[int]


class EpisodeMetadata(_Model):
    """``Trajectory.metadata`` of a simulated episode: the intent's coordinates, the
    conversation's shape (ise_core.simulate.metrics), checks, usage and who played whom."""

    persona: Persona
    domains: list[str]
    tasks: list[TaskRef]
    complexity: Complexity
    user_turns: int
    dialogue_turns: int
    assistant_turns: int
    tool_calls: int
    distinct_tools: int
    tool_usage: dict[str, int]
    tool_errors: int
    recovered_errors: int
    checks_passed: int
    checks_total: int
    token_usage: TokenUsage
    llm: Seats
    backend: str
    role_drift: RoleDrift
    user_simulator: UserSimulatorStats
    agent: AgentStats
    intent_hash: str
    error: str | None = None  # only on failed or stopped-by-error episodes
    # Agent tool calls read from reply text rather than the API's tool_calls (every call in
    # the prompted mode); stored as proper tool_calls in ``messages``.
    text_tool_calls: int = 0
    # Agent requests sent with older tool outputs cut to fit the context window, and what
    # each reply of such a request saw. ``messages`` always keep the full outputs.
    compactions: int = 0
    compacted_context: list[ContextView] = []

    def as_dict(self) -> dict[str, Any]:
        """The JSON form stored in the trajectory. ``error``, ``text_tool_calls``,
        ``compactions`` and ``compacted_context`` appear only when set: an episode without
        them reads as it did before they existed."""
        unset = {
            name
            for name in ("error", "text_tool_calls", "compactions", "compacted_context")
            if not getattr(self, name)
        }
        return self.model_dump(mode="json", exclude=unset)


@dataclass
class EpisodeResult:
    """An episode's trajectory (reproducible content) and its timings (not reproducible)."""

    trajectory: Trajectory
    timing: dict[str, Any] = field(default_factory=dict)


# --- the orchestrator ------------------------------------------------------------------------


def _failure_reason(exc: BaseException) -> StopReason:
    if isinstance(exc, ContextOverflow):
        return StopReason.CONTEXT_OVERFLOW
    if isinstance(exc, LLMError):
        return StopReason.LLM_ERROR
    if isinstance(exc, BackendError):
        return StopReason.WORKSPACE_ERROR
    return StopReason.ERROR


@dataclass
class EpisodeState:
    """Everything that changes while an episode runs, passed from step to step."""

    started: float = field(default_factory=time.monotonic)
    timing: dict[str, Any] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    user_turns: int = 0
    agent_reply: str | None = None  # None until the agent's first turn
    final_output: str = ""
    agent_usage: Usage = field(default_factory=Usage)
    agent: AgentStats = field(default_factory=AgentStats)
    agent_llm_s: float = 0.0
    tool_s: float = 0.0
    text_tool_calls: int = 0
    compactions: int = 0
    views: list[ContextView] = field(default_factory=list)
    stop: StopReason | None = None
    completed: bool = False
    is_success: bool | None = None
    closing: str = ""
    error: str = ""
    failed: bool = False
    checks: list[CheckResult] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Orchestrator:
    """Runs one episode: ``initialize`` → ``step`` until stopped → ``finalize``.

    The workspace is opened here and closed by the caller. A failure inside the episode does
    not raise: it becomes status ``failed`` with a stop reason and ``metadata.error``. Two
    things do propagate: cancellation (Ctrl-C, a stopped task) and ``BudgetExceeded`` (the
    run's LLM budget is spent; the caller drops the episode unwritten so it runs again later).
    """

    def __init__(
        self,
        intent: Intent,
        *,
        user: Chat,
        agent: Chat,
        workspace: Workspace,
        settings: SimulateSettings,
        session_id: str | None = None,
        params_fingerprint: str = "",
    ) -> None:
        self.intent = intent
        self.agent = agent
        self.user = user
        self.workspace = workspace
        self.settings = settings
        self.session_id = session_id or intent.id
        self.params_fingerprint = params_fingerprint
        # simulate.first_turn: request sends the intent's request as written, unless the user
        # seat is a program that opens with it by itself (the scripted user).
        written = settings.first_turn == "request" and not opens_with_request(user)
        self.simulator = UserSimulator(
            chat=user,
            system_prompt=user_system_prompt(
                intent, show_workspace_files=settings.show_workspace_files, opening_sent=written
            ),
            persona_name=intent.persona.name,
            user_retries=settings.user_retries,
            drift_retries=settings.drift_retries,
            episode_tag=intent.id,
            opening=intent.request.strip() if written else None,
        )
        self.state = EpisodeState()

    async def run(self) -> EpisodeResult:
        self.state.timing["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            await self.initialize()
            while self.state.stop is None:
                await self.step()
            await self.run_checks()
        except (BudgetExceeded, Interrupted):
            # The run's budget is spent, or a stop signal came (ise_core.shutdown): the caller
            # abandons this episode unwritten, never records it as failed.
            raise
        except Exception as exc:  # one episode's failure must not end the run
            self.state.stop = _failure_reason(exc)
            self.state.error = f"{type(exc).__name__}: {exc}"
            self.state.failed = True
        return self.finalize()

    # -- lifecycle --------------------------------------------------------------------------

    async def initialize(self) -> None:
        opened = time.monotonic()
        await asyncio.to_thread(self.workspace.open, self.intent.fixtures, self.intent.persona)
        self.state.timing["open_s"] = round(time.monotonic() - opened, 4)
        self.state.tools = self.workspace.tool_schemas()
        self.state.messages.append(
            Message(role="system", content=agent_system_prompt(self.state.tools))
        )

    async def step(self) -> None:
        """One user turn, then (unless that ended the episode) one agent turn."""
        state = self.state
        state.stop = self.limit_reached()
        if state.stop is not None:
            return
        query = await self.user_turn()
        if query is None:
            return
        state.messages.append(Message(role="user", content=query))
        state.user_turns += 1
        self.record(await self.agent_turn())

    async def run_checks(self) -> None:
        checked = time.monotonic()
        for check in self.intent.checks:
            self.state.checks.append(await asyncio.to_thread(self.workspace.run_check, check))
        self.state.timing["checks_s"] = round(time.monotonic() - checked, 4)

    def finalize(self) -> EpisodeResult:
        state, settings = self.state, self.settings
        passed = sum(1 for result in state.checks if result.passed)
        checks_ok = passed == len(self.intent.checks)
        kept = (
            not state.failed
            and state.completed
            and state.is_success is not False
            and (checks_ok or not settings.require_checks)
        )
        user = self.simulator.summary()
        state.timing.update(
            {
                "wall_s": round(state.elapsed(), 4),
                "user_llm_s": round(user.llm_seconds, 4),
                "agent_llm_s": round(state.agent_llm_s, 4),
                "tool_s": round(state.tool_s, 4),
            }
        )
        trajectory = Trajectory(
            intent_id=self.intent.id,
            session_id=self.session_id,
            status="failed" if state.failed else "kept" if kept else "rejected",
            stop_reason=(state.stop or StopReason.ERROR).value,
            completed=state.completed,
            is_success=state.is_success,
            kept=kept,
            messages=state.messages,
            tools=state.tools,
            final_output=state.final_output,
            checks=state.checks,
            metadata=self.metadata(user, passed).as_dict(),
            params_fingerprint=self.params_fingerprint,
        )
        return EpisodeResult(trajectory, state.timing)

    # -- the parts of a step ----------------------------------------------------------------

    def tokens_used(self) -> int:
        return self.simulator.usage.total_tokens + self.state.agent_usage.total_tokens

    def limit_reached(self) -> StopReason | None:
        """The token budget or the wall clock, asked between steps and before model calls."""
        budget = self.settings.episode_token_budget
        if budget is not None and self.tokens_used() >= budget:
            return StopReason.TOKEN_BUDGET
        if self.state.elapsed() >= self.settings.episode_time_limit_s:
            return StopReason.TIME_LIMIT
        return None

    async def user_turn(self) -> str | None:
        """The user's next query, or None when the user's turn ended the episode."""
        state, settings = self.state, self.settings
        listing: list[str] | None = None
        if settings.show_workspace_files and state.agent_reply is not None:
            files = await asyncio.to_thread(self.workspace.list_files)
            listing = files[: settings.workspace_listing_limit]
        step = await self.simulator.next_turn(state.agent_reply, listing)
        if step.turn is None:
            state.stop = step.stop_reason or StopReason.USER_ERROR
            state.error = step.problem
        elif step.turn.completed:
            state.completed, state.is_success = True, step.turn.is_success
            state.closing = step.turn.query
            state.stop = StopReason.COMPLETED
        elif not step.turn.query:
            state.stop = StopReason.EMPTY_QUERY
        elif state.user_turns >= settings.max_turns:
            state.stop = StopReason.MAX_TURNS
        return None if state.stop is not None or step.turn is None else step.turn.query

    async def agent_turn(self) -> AgentTurn:
        return await run_agent_turn(
            self.agent,
            self.state.messages,
            self.workspace,
            self.state.tools,
            max_steps=self.settings.max_steps_per_turn,
            should_stop=self.limit_reached,
            options={"episode": self.intent.id},
        )

    def record(self, turn: AgentTurn) -> None:
        """Fold one agent turn into the state; a stop check that fired mid-turn ends it."""
        state = self.state
        state.messages.extend(turn.messages)
        state.agent_usage = state.agent_usage + turn.usage
        state.agent_llm_s += turn.llm_seconds
        state.tool_s += turn.tool_seconds
        state.agent.steps += turn.steps
        state.agent.malformed_replies += turn.malformed_replies
        state.agent.step_limit_hits += turn.stop_reason == TurnEnd.MAX_STEPS
        state.text_tool_calls += turn.text_tool_calls
        state.compactions += turn.compactions
        state.views += [ContextView(reply=reply, cut=cut) for reply, cut in turn.views]
        state.agent_reply = turn.reply
        if turn.reply:
            state.final_output = turn.reply
        if not isinstance(turn.stop_reason, TurnEnd):
            state.stop = turn.stop_reason
            state.error = turn.problem

    def metadata(self, user: UserSimulatorSummary, passed: int) -> EpisodeMetadata:
        state, intent = self.state, self.intent
        return EpisodeMetadata(
            persona=intent.persona,
            domains=list(intent.domains),
            tasks=list(intent.tasks),
            complexity=intent.complexity,
            **conversation_metrics(state.messages),
            checks_passed=passed,
            checks_total=len(intent.checks),
            token_usage=TokenUsage(
                user=TokenCounts.of(user.usage),
                agent=TokenCounts.of(state.agent_usage),
                total_tokens=self.tokens_used(),
            ),
            llm=Seats(user=self.user.name, agent=self.agent.name),
            backend=getattr(self.workspace, "backend", "unknown"),
            role_drift=RoleDrift(
                events=user.drift_events,
                generations=user.generations,
                rate=round(len(user.drift_events) / user.generations, 6)
                if user.generations
                else 0.0,
            ),
            user_simulator=UserSimulatorStats(
                invalid_outputs=user.invalid_outputs, turns=user.turns, closing=state.closing
            ),
            agent=state.agent,
            intent_hash=intent_hash(intent),
            error=state.error[:2000] or None,
            text_tool_calls=state.text_tool_calls,
            compactions=state.compactions,
            compacted_context=state.views,
        )


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
    """Simulate one episode for ``intent`` in ``workspace`` (see ``Orchestrator``)."""
    orchestrator = Orchestrator(
        intent,
        user=user,
        agent=agent,
        workspace=workspace,
        settings=settings,
        session_id=session_id,
        params_fingerprint=params_fingerprint,
    )
    return await orchestrator.run()


__all__ = [
    "AgentStats",
    "ContextView",
    "EpisodeMetadata",
    "EpisodeResult",
    "EpisodeState",
    "Orchestrator",
    "StopReason",
    "run_episode",
]
