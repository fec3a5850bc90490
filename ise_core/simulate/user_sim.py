"""The role-locked user simulator: one ``Chat`` that plays the person who owns the intent.

Its conversation is kept from its own point of view: the system prompt (intent + persona +
role-lock rules), then alternately its own turns (as assistant messages holding the turn's
JSON) and the agent's final replies (as user messages). It never sees raw tool output.

Each turn must be one JSON object ``{completed, query, reason, is_success}``:

- output that is not such an object is answered with a correction and asked again, up to
  ``user_retries`` times; then the simulator gives up with stop reason ``user_error``;
- a ``query`` the drift detector flags (ise_core.simulate.drift) is answered with a role
  reminder and regenerated, up to ``drift_retries`` times; then stop reason ``role_drift``.

Correction exchanges are not kept in the simulator's history, so a later turn sees only the
clean conversation. Every generated candidate counts towards the drift rate's denominator.

The opening turn is either generated like the others or, when ``opening`` is set (the
intent's written request, ``simulate.first_turn: request``), taken as written: it is recorded
in the simulator's history as its own first turn, and nothing is generated for it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ise_core.errors import ContextOverflow, UserTurnError, validation_problems
from ise_core.llm.base import Chat, Usage
from ise_core.llm.replies import MalformedResponse
from ise_core.records import Message, StopReason, canonical_json
from ise_core.simulate.drift import detect_role_drift
from ise_core.simulate.prompting import render_prompt

OPENING_REASON = "the intent's written request"
_FENCED = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


class UserTurn(BaseModel):
    """One validated turn of the user simulator."""

    model_config = ConfigDict(extra="forbid", strict=True)

    completed: bool
    query: str
    reason: str = ""
    is_success: bool | None = None

    @field_validator("query", "reason")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


def parse_user_turn(text: str | None) -> UserTurn:
    """Parse one turn from model output: a JSON object, optionally inside a ```json fence."""
    if text is None or not text.strip():
        raise UserTurnError("the answer was empty")
    candidates = [text.strip()]
    candidates += [block.strip() for block in _FENCED.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    data: Any = None
    for candidate in candidates:
        try:
            data = json.loads(candidate)
            break
        except json.JSONDecodeError:
            continue
    else:
        raise UserTurnError("the answer is not a JSON object")
    if not isinstance(data, dict):
        raise UserTurnError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return UserTurn.model_validate(data)
    except ValidationError as exc:
        raise UserTurnError("; ".join(validation_problems(exc, limit=4, root="(object)"))) from None


@dataclass
class UserStep:
    """What one call of ``UserSimulator.next_turn`` produced."""

    turn: UserTurn | None
    # USER_ERROR, ROLE_DRIFT or CONTEXT_OVERFLOW when it gave up
    stop_reason: StopReason | None = None
    problem: str = ""


@dataclass(frozen=True)
class UserSimulatorSummary:
    """What the simulator did over a whole episode, for the episode's metadata."""

    usage: Usage
    llm_seconds: float
    generations: int  # every candidate turn generated, corrections included
    invalid_outputs: int
    drift_events: list[dict[str, Any]]
    turns: list[dict[str, Any]]


@dataclass
class UserSimulator:
    """Drives the user ``Chat`` turn by turn, validating JSON and guarding the role lock."""

    chat: Chat
    system_prompt: str
    persona_name: str
    user_retries: int = 2
    drift_retries: int = 2
    episode_tag: str = ""
    opening: str | None = None  # the opening query as written; None: generate it
    history: list[Message] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    llm_seconds: float = 0.0
    generations: int = 0
    invalid_outputs: int = 0
    drift_events: list[dict[str, Any]] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.history:
            self.history = [Message(role="system", content=self.system_prompt)]

    def observation(self, agent_reply: str, workspace_files: list[str] | None) -> str:
        """What the simulated person is shown after an agent turn."""
        reply = agent_reply.strip() or "(The assistant ended its turn without a reply.)"
        listing = ""
        if workspace_files is not None:
            shown = "\n".join(f"- {name}" for name in workspace_files) or "(empty)"
            listing = f"\nFiles now in the workspace:\n{shown}\n"
        return render_prompt(
            "user_observation", reply=reply, workspace_files=listing, name=self.persona_name
        )

    async def _complete(self, messages: list[Message], attempt: int) -> str | None:
        options: dict[str, Any] = {"attempt": attempt}
        if self.episode_tag:
            options["episode"] = self.episode_tag
        try:
            result = await self.chat.complete(messages, None, **options)
        except MalformedResponse as exc:
            # An unusable reply is treated like invalid JSON: corrected and asked again.
            if exc.result is not None:
                self.usage = self.usage + exc.result.usage
            return None
        self.usage = self.usage + result.usage
        self.llm_seconds += result.latency_s
        return result.message.content

    async def next_turn(
        self, agent_reply: str | None = None, workspace_files: list[str] | None = None
    ) -> UserStep:
        """The person's next turn; ``agent_reply`` is None only for the opening turn."""
        if agent_reply is None and self.opening is not None:
            return self._written_opening(self.opening)
        if agent_reply is None:
            prompt = render_prompt("user_kickoff")
        else:
            prompt = self.observation(agent_reply, workspace_files)
        self.history.append(Message(role="user", content=prompt))
        turn_index = len(self.turns) + 1
        corrections: list[Message] = []
        json_retries = drift_retries = 0
        attempt = 0
        while True:
            try:
                text = await self._complete(self.history + corrections, attempt)
            except ContextOverflow as exc:
                # The person's side of the conversation no longer fits the model's window.
                return UserStep(None, StopReason.CONTEXT_OVERFLOW, str(exc))
            attempt += 1
            self.generations += 1
            try:
                turn = parse_user_turn(text)
            except UserTurnError as exc:
                self.invalid_outputs += 1
                if json_retries >= self.user_retries:
                    return UserStep(None, StopReason.USER_ERROR, str(exc))
                json_retries += 1
                corrections += [
                    Message(role="assistant", content=text or ""),
                    Message(role="user", content=render_prompt("user_invalid_json", problem=exc)),
                ]
                continue
            hits = detect_role_drift(turn.query) if turn.query else []
            if hits:
                self.drift_events.append(
                    {
                        "turn": turn_index,
                        "attempt": drift_retries,
                        "rules": [hit.rule for hit in hits],
                        "excerpt": hits[0].excerpt,
                    }
                )
                if drift_retries >= self.drift_retries:
                    return UserStep(None, StopReason.ROLE_DRIFT, ", ".join(h.rule for h in hits))
                drift_retries += 1
                problems = "; ".join(
                    f"{hit.rule.replace('_', ' ')} ('{hit.excerpt}')" for hit in hits
                )
                corrections += [
                    Message(role="assistant", content=text or ""),
                    Message(
                        role="user",
                        content=render_prompt(
                            "user_role_drift", problems=problems, name=self.persona_name
                        ),
                    ),
                ]
                continue
            return self._accept(turn)

    def _accept(self, turn: UserTurn) -> UserStep:
        self.history.append(Message(role="assistant", content=canonical_json(turn.model_dump())))
        self.turns.append(
            {"completed": turn.completed, "is_success": turn.is_success, "reason": turn.reason}
        )
        return UserStep(turn)

    def _written_opening(self, request: str) -> UserStep:
        """The opening as written: the simulator's history shows it as the person's own first
        message (answering the kickoff), so its follow-ups continue from it."""
        self.history.append(Message(role="user", content=render_prompt("user_kickoff")))
        return self._accept(UserTurn(completed=False, query=request, reason=OPENING_REASON))

    def summary(self) -> UserSimulatorSummary:
        """What the simulator did so far, for the episode's metadata."""
        return UserSimulatorSummary(
            usage=self.usage,
            llm_seconds=self.llm_seconds,
            generations=self.generations,
            invalid_outputs=self.invalid_outputs,
            drift_events=list(self.drift_events),
            turns=list(self.turns),
        )


__all__ = [
    "UserSimulator",
    "UserSimulatorSummary",
    "UserStep",
    "UserTurn",
    "UserTurnError",
    "parse_user_turn",
]
