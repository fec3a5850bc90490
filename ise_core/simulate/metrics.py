"""Conversation shape metrics and their summaries, as DESIGN §3 defines them: the one place
turns, tool calls and errors are counted (episodes, collect, export and the gates call it).

- *user turn*: a user message; *dialogue turn*: any non-system message (user, assistant, tool);
- *tool calls*: every call in an assistant message's ``tool_calls``; *distinct tools*: the
  number of different tool names called;
- *tool error*: a tool message with ``success`` false;
- *recovered error*: a failed tool call followed later in the same conversation by a
  successful call of the same tool (a result whose backend did not say counts as success).

Messages may be ``Message`` records or their JSON form (an exported line, a raw episode file
being gated), so the counts read fields by name from either.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ise_core.records import Message, Trajectory

MessageLike = Message | Mapping[str, Any]


def _get(message: MessageLike, name: str) -> Any:
    if isinstance(message, Mapping):
        return message.get(name)
    return getattr(message, name)


def _call_parts(call: Any) -> tuple[str, str]:
    """(id, function name) of one tool call, typed or raw."""
    if isinstance(call, Mapping):
        function = call.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        return str(call.get("id")), str(name or "")
    return call.id, call.function.name


def turn_counts(messages: Sequence[MessageLike]) -> tuple[int, int]:
    """(user turns, dialogue turns)."""
    roles = [_get(m, "role") for m in messages]
    return sum(1 for r in roles if r == "user"), sum(1 for r in roles if r != "system")


def conversation_metrics(messages: Sequence[MessageLike]) -> dict[str, Any]:
    """Counts describing one conversation's shape (pure; messages in OpenAI layout)."""
    calls: Counter[str] = Counter()
    call_tool: dict[str, str] = {}
    outcomes: list[tuple[str, bool | None]] = []  # (tool, success) in conversation order
    for message in messages:
        role = _get(message, "role")
        if role == "assistant":
            for call in _get(message, "tool_calls") or []:
                call_id, name = _call_parts(call)
                call_tool[call_id] = name
                calls[name] += 1
        elif role == "tool":
            name = _get(message, "name") or call_tool.get(str(_get(message, "tool_call_id")), "")
            outcomes.append((name, _get(message, "success")))
    failed_at = [i for i, (_, ok) in enumerate(outcomes) if ok is False]
    recovered = sum(
        1
        for index in failed_at
        if any(tool == outcomes[index][0] and ok is not False for tool, ok in outcomes[index + 1 :])
    )
    user_turns, dialogue_turns = turn_counts(messages)
    return {
        "user_turns": user_turns,
        "dialogue_turns": dialogue_turns,
        "assistant_turns": sum(1 for m in messages if _get(m, "role") == "assistant"),
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


def share_between(values: Sequence[float], low: float, high: float) -> float:
    """The share of ``values`` within [low, high] (0.0 for none)."""
    if not values:
        return 0.0
    return round(sum(1 for v in values if low <= v <= high) / len(values), 4)


def _usage(episodes: Sequence[Trajectory]) -> dict[str, Any]:
    totals: dict[str, Counter[str]] = {"user": Counter(), "agent": Counter()}
    for episode in episodes:
        usage = episode.metadata.get("token_usage") or {}
        for role in totals:
            for key, value in (usage.get(role) or {}).items():
                totals[role][key] += int(value)
    roles = {role: dict(sorted(counter.items())) for role, counter in totals.items()}
    return {
        **roles,
        "total_tokens": sum(counter.get("total_tokens", 0) for counter in totals.values()),
    }


def _drift_counts(episodes: Sequence[Trajectory]) -> tuple[int, int]:
    """(drift events, user generations) over all episodes."""
    drift = [e.metadata.get("role_drift") or {} for e in episodes]
    return (
        sum(len(d.get("events", [])) for d in drift),
        sum(int(d.get("generations", 0)) for d in drift),
    )


def episode_count(episode: Trajectory, key: str) -> int:
    """An integer the simulator recorded in the episode's metadata only when non-zero
    (``text_tool_calls``, ``compactions``); 0 when absent."""
    value = episode.metadata.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _recorded_counts(episodes: Sequence[Trajectory], key: str) -> dict[str, int]:
    """A per-episode count over all episodes: its total, the episodes with any, and the kept
    episodes with any (what ``export.text_tool_calls: drop`` would leave out)."""
    counts = [(episode_count(e, key), e.kept) for e in episodes]
    return {
        "total": sum(n for n, _ in counts),
        "episodes": sum(1 for n, _ in counts if n),
        "kept_episodes": sum(1 for n, kept in counts if n and kept),
    }


def _checks_pass_rate(episodes: Sequence[Trajectory]) -> float:
    checked = [e for e in episodes if e.status != "failed"]
    total = sum(len(e.checks) for e in checked)
    passed = sum(1 for e in checked for c in e.checks if c.passed)
    return round(passed / total, 4) if total else 0.0


def trajectory_stats(
    episodes: Sequence[Trajectory], *, fp: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The trajectory statistics of DESIGN §3 over ``episodes`` (shape stats over kept ones)."""
    kept = [e for e in episodes if e.kept]

    def values(name: str) -> list[float]:
        return [float(e.metadata.get(name, 0)) for e in kept]

    user_turns, recovered, errors = (
        values("user_turns"),
        values("recovered_errors"),
        values("tool_errors"),
    )
    drift_events, generations = _drift_counts(episodes)
    tool_usage: Counter[str] = Counter()
    for episode in kept:
        tool_usage.update(episode.metadata.get("tool_usage") or {})
    recovery_share = share_between(recovered, 1, float("inf")) if kept else 0.0
    return {
        **(extra or {}),
        "n_episodes": len(episodes),
        "n_kept": len(kept),
        "n_rejected": sum(1 for e in episodes if e.status == "rejected"),
        "n_failed": sum(1 for e in episodes if e.status == "failed"),
        "completion_rate": round(len(kept) / len(episodes), 4) if episodes else 0.0,
        "user_turns": summarize(user_turns),
        "user_turns_share_6_10": share_between(user_turns, 6, 10),
        "dialogue_turns": summarize(values("dialogue_turns")),
        "tool_calls": summarize(values("tool_calls")),
        "distinct_tools": summarize(values("distinct_tools")),
        "tool_errors": {"total": int(sum(errors)), **summarize(errors)},
        "recovered_errors": {
            "total": int(sum(recovered)),
            **summarize(recovered),
            "share_of_kept_with_recovery": recovery_share,
        },
        "role_drift_rate": round(drift_events / generations, 6) if generations else 0.0,
        "role_drift_events": drift_events,
        "user_generations": generations,
        "stop_reasons": dict(sorted(Counter(e.stop_reason for e in episodes).items())),
        # tool calls read from reply text; requests compacted to fit the context window
        "text_tool_calls": _recorded_counts(episodes, "text_tool_calls"),
        "compactions": _recorded_counts(episodes, "compactions"),
        "checks_pass_rate": _checks_pass_rate(episodes),
        "tool_usage": dict(sorted(tool_usage.items())),
        "complexity": dict(
            sorted(Counter(str(e.metadata.get("complexity")) for e in kept).items())
        ),
        "backends": dict(sorted(Counter(str(e.metadata.get("backend")) for e in episodes).items())),
        "llm_usage": _usage(episodes),
        "params_fingerprint": fp,
    }


__all__ = [
    "conversation_metrics",
    "episode_count",
    "share_between",
    "summarize",
    "trajectory_stats",
    "turn_counts",
]
