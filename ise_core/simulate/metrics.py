"""Per-episode shape metrics and their summaries, as DESIGN §3 defines them.

- *user turn*: a user message; *dialogue turn*: any non-system message (user, assistant, tool);
- *tool calls*: every call in an assistant message's ``tool_calls``; *distinct tools*: the
  number of different tool names called;
- *tool error*: a tool message with ``success`` false;
- *recovered error*: a failed tool call followed later in the same episode by a successful
  call of the same tool.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from ise_core.records import Message


def episode_metrics(messages: Sequence[Message]) -> dict[str, Any]:
    """Counts describing one conversation's shape (pure; messages in OpenAI layout)."""
    calls: Counter[str] = Counter()
    for message in messages:
        if message.role == "assistant":
            for call in message.tool_calls or []:
                calls[call.function.name] += 1
    tool_messages = [m for m in messages if m.role == "tool"]
    failed_at = [i for i, m in enumerate(tool_messages) if m.success is False]
    recovered = 0
    for index in failed_at:
        name = tool_messages[index].name
        if any(
            later.name == name and later.success is True for later in tool_messages[index + 1 :]
        ):
            recovered += 1
    return {
        "user_turns": sum(1 for m in messages if m.role == "user"),
        "dialogue_turns": sum(1 for m in messages if m.role != "system"),
        "assistant_turns": sum(1 for m in messages if m.role == "assistant"),
        "tool_calls": sum(calls.values()),
        "distinct_tools": len(calls),
        "tool_usage": dict(sorted(calls.items())),
        "tool_errors": len(failed_at),
        "recovered_errors": recovered,
    }


def summarize(values: Iterable[float]) -> dict[str, float]:
    """``{mean, median, max}`` of ``values`` (all zero for an empty input)."""
    data = list(values)
    if not data:
        return {"mean": 0.0, "median": 0.0, "max": 0.0}
    return {
        "mean": round(statistics.fmean(data), 4),
        "median": float(statistics.median(data)),
        "max": float(max(data)),
    }


__all__ = ["episode_metrics", "summarize"]
