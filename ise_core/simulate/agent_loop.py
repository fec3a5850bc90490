"""The agent loop: one user turn of a tool-using agent acting in a live workspace.

Per step the agent ``Chat`` is called with the whole conversation and the tool schemas. Each
tool call in its reply runs in the workspace, in order, and its result is appended as a tool
message (``tool_call_id``, ``name``, ``content``, ``success``). The turn ends when the agent
answers without tool calls, or after ``max_steps`` model calls.

Nothing the model emits crashes the loop. Each of these becomes an ``Error: …`` tool message
with ``success: false`` that the model sees on its next step:

- arguments that are not JSON, or not a JSON object;
- a tool name the workspace does not offer;
- a missing required argument, an unknown argument, or a value of the wrong JSON type (the
  workspace's tool set checks arguments against each tool's signature: the one place they
  are validated);
- a tool that raised instead of returning a failed ``ToolResult``.

A reply the LLM client itself rejects as malformed (``MalformedResponse``) is used as far as it
could be read (its tool calls then go through the checks above); a reply with nothing usable is
asked for again, counting as a step.

A request the model's context window cannot hold even after the client compacted it and
tried once more (``ContextOverflow``) ends the turn, and the episode, with stop reason
``context_overflow``; what the turn did until then is kept.

What the model saw: when the client compacted a request (ise_core.llm.context), the reply
that request produced is recorded in ``AgentTurn.views`` with the positions of the tool
outputs that were cut, so the export can rebuild that context from the full record.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ise_core.errors import BackendError, ContextOverflow
from ise_core.llm.base import Chat, ChatResult, Usage
from ise_core.llm.replies import MalformedResponse, tool_names
from ise_core.records import Message, StopReason, ToolCall
from ise_core.workspace.base import ToolResult, Workspace


def _error(call: ToolCall, text: str) -> Message:
    return Message(
        role="tool",
        tool_call_id=call.id,
        name=call.function.name,
        content=f"Error: {text}",
        success=False,
    )


# The starts of the tool messages written when a call never ran in the workspace: a tool that
# was not offered, arguments that are not a JSON object (execute_tool_call), or arguments the
# tool's signature rejected before running (workspace.toolkit.describe_arguments_error).
NOT_RUN = ("Error: unknown tool ", "Error: arguments are not valid JSON",
           "Error: arguments must be a JSON object", "Error: invalid arguments for ")  # fmt: skip
REJECTED = " rejected its arguments: "


def ran_in_workspace(message: Message) -> bool:
    """Whether a tool message is the workspace's answer to a call it ran (a success, or the
    tool's own error such as a missing file or a non-zero exit code)."""
    content = message.content or ""
    return message.role == "tool" and not content.startswith(NOT_RUN) and REJECTED not in content


def execute_tool_call(
    workspace: Workspace, call: ToolCall, offered: Set[str]
) -> tuple[Message, float]:
    """Run one tool call in the workspace; returns the tool message and its duration.

    ``offered`` is the tool names the model was given; the arguments themselves are checked
    by the workspace against the tool's signature."""
    name = call.function.name
    if name not in offered:
        return _error(call, f"unknown tool {name!r}; available: {', '.join(sorted(offered))}"), 0.0
    try:
        arguments = json.loads(call.function.arguments or "{}")
    except json.JSONDecodeError as exc:
        return _error(call, f"arguments are not valid JSON ({exc.msg} at column {exc.colno})"), 0.0
    if not isinstance(arguments, dict):
        return _error(call, f"arguments must be a JSON object, got {type(arguments).__name__}"), 0.0
    started = time.perf_counter()
    try:
        result: ToolResult = workspace.call(name, arguments)
    except BackendError:
        raise  # the sandbox itself is gone: the episode cannot go on
    except (TypeError, ValueError, KeyError) as exc:
        return _error(call, f"{name}{REJECTED}{exc}"), time.perf_counter() - started
    message = Message(
        role="tool",
        tool_call_id=call.id,
        name=name,
        content=result.content,
        success=result.ok,
    )
    return message, result.duration_s or time.perf_counter() - started


class TurnEnd(StrEnum):
    """How an agent turn ended when the episode goes on."""

    ANSWERED = "answered"  # a reply without tool calls
    MAX_STEPS = "max_steps"  # max_steps model calls; the user sees the last thing said


@dataclass
class AgentTurn:
    """What one agent turn added to the conversation."""

    messages: list[Message] = field(default_factory=list)
    reply: str = ""
    usage: Usage = field(default_factory=Usage)
    steps: int = 0
    # A TurnEnd, or the StopReason of the caller's check that ended the episode mid-turn.
    stop_reason: TurnEnd | StopReason = TurnEnd.ANSWERED
    malformed_replies: int = 0
    llm_seconds: float = 0.0
    tool_seconds: float = 0.0
    text_tool_calls: int = 0  # calls read from reply text (ise_core.llm.dialect)
    compactions: int = 0  # requests sent with older tool outputs cut to fit the window
    # (position of a reply in the conversation, positions of the tool outputs cut when the
    # request that produced it was sent), for each reply of a compacted request.
    views: list[tuple[int, list[int]]] = field(default_factory=list)
    problem: str = ""  # why the turn ended the episode (context_overflow), else ""


async def _complete(
    agent: Chat,
    conversation: list[Message],
    tools: Sequence[dict[str, Any]],
    options: dict[str, Any],
) -> tuple[ChatResult | None, bool]:
    """The agent's reply (None when nothing usable came back) and whether it was malformed."""
    try:
        return await agent.complete(conversation, tools, **options), False
    except MalformedResponse as exc:
        result = exc.result
        if result is not None and result.message.tool_calls:
            return result, True
        return (
            result.model_copy(update={"message": Message(role="assistant")}) if result else None
        ), True


async def run_agent_turn(
    agent: Chat,
    conversation: Sequence[Message],
    workspace: Workspace,
    tools: Sequence[dict[str, Any]],
    *,
    max_steps: int,
    should_stop: Callable[[], StopReason | None] = lambda: None,
    options: Mapping[str, Any] | None = None,
) -> AgentTurn:
    """Run the agent until it answers without tool calls, or for at most ``max_steps`` calls.

    ``should_stop`` is asked before every model call (token budget, wall clock); a non-None
    answer ends the turn with that stop reason. Tool calls run in a worker thread, because the
    workspace API is synchronous.
    """
    offered = tool_names(tools)
    history = list(conversation)
    turn = AgentTurn()
    base_options = dict(options or {})
    while True:
        if turn.steps >= max_steps:
            turn.stop_reason = TurnEnd.MAX_STEPS
            # The last thing the agent said (if anything) is what the user gets to see.
            said = [m.content for m in turn.messages if m.role == "assistant" and m.content]
            turn.reply = said[-1] if said else ""
            return turn
        reason = should_stop()
        if reason:
            turn.stop_reason = reason
            return turn
        call_options = {**base_options, "attempt": turn.malformed_replies}
        try:
            result, malformed = await _complete(agent, history, tools, call_options)
        except ContextOverflow as exc:
            turn.stop_reason, turn.problem = StopReason.CONTEXT_OVERFLOW, str(exc)
            return turn
        turn.steps += 1
        if result is not None:
            turn.usage = turn.usage + result.usage
            turn.llm_seconds += result.latency_s
            turn.compactions += bool(result.compacted)
        if malformed:
            turn.malformed_replies += 1
        message = result.message if result is not None else Message(role="assistant")
        if malformed and not message.tool_calls:
            continue  # nothing usable: ask again (counts as a step)
        if result is not None:
            turn.text_tool_calls += result.text_tool_calls
            if result.compacted:
                turn.views.append((len(history), list(result.compacted)))
        reply = Message(
            role="assistant",
            content=message.content,
            tool_calls=message.tool_calls or None,
            reasoning_content=message.reasoning_content,
        )
        history.append(reply)
        turn.messages.append(reply)
        if not reply.tool_calls:
            turn.reply = reply.content or ""
            turn.stop_reason = TurnEnd.ANSWERED
            return turn
        for call in reply.tool_calls:
            tool_message, seconds = await asyncio.to_thread(
                execute_tool_call, workspace, call, offered
            )
            turn.tool_seconds += seconds
            history.append(tool_message)
            turn.messages.append(tool_message)


__all__ = ["AgentTurn", "TurnEnd", "execute_tool_call", "run_agent_turn"]
