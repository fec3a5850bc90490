"""Statistics of an SFT export, computed from the exported records themselves.

Turns, tool calls and errors are counted by ``ise_core.simulate.metrics`` (the definitions of
DESIGN §3 live there). Token counts come from the usage the LLM backends recorded
(``metadata.token_usage``) plus a backend-independent estimate of characters / 4.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from ise_core.export.formats import is_last_part
from ise_core.simulate.metrics import conversation_metrics, share_between

CHARS_PER_TOKEN = 4
DISTRIBUTIONS = (
    "user_turns",
    "dialogue_turns",
    "tool_calls",
    "distinct_tools",
    "tool_errors",
    "recovered_errors",
)


def conversation_measures(record: dict[str, Any]) -> dict[str, Any]:
    """Turn, tool and error counts of one exported conversation, plus its tools and an
    estimate of its tokens."""
    messages = record["messages"]
    chars = 0
    for message in messages:
        chars += len(message.get("content") or "") + len(message.get("reasoning_content") or "")
        for call in message.get("tool_calls") or []:
            chars += len(call["function"]["name"]) + len(call["function"]["arguments"])
    counts = conversation_metrics(messages)
    return {
        **{name: counts[name] for name in DISTRIBUTIONS},
        "tools": sorted(counts["tool_usage"]),
        "estimated_tokens": math.ceil(chars / CHARS_PER_TOKEN),
    }


def distribution(values: Sequence[int]) -> dict[str, Any]:
    """Mean, median, min, max and the full histogram (value → count) of integer counts."""
    if not values:
        return {"n": 0, "mean": 0.0, "median": 0.0, "min": 0, "max": 0, "histogram": {}}
    counts = Counter(values)
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 4),
        "median": float(statistics.median(values)),
        "min": min(values),
        "max": max(values),
        "histogram": {str(v): counts[v] for v in sorted(counts)},
    }


def tool_cooccurrence(tool_sets: Iterable[Sequence[str]]) -> dict[str, Any]:
    """How many conversations used each pair of tools; the diagonal counts single tools.

    Tools are ordered by how many conversations used them (then by name)."""
    sets = [sorted(set(tools)) for tools in tool_sets]
    usage = Counter(tool for tools in sets for tool in tools)
    order = sorted(usage, key=lambda t: (-usage[t], t))
    index = {tool: i for i, tool in enumerate(order)}
    matrix = [[0] * len(order) for _ in order]
    for tools in sets:
        for a in tools:
            for b in tools:
                matrix[index[a]][index[b]] += 1
    return {"tools": order, "counts": matrix}


def _sum_usage(value: Any, totals: Counter[str]) -> None:
    """Add every prompt/completion token count found anywhere in a usage record."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("prompt_tokens", "completion_tokens") and isinstance(item, int | float):
                totals[key] += int(item)
            else:
                _sum_usage(item, totals)
    elif isinstance(value, list):
        for item in value:
            _sum_usage(item, totals)


def recorded_usage(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for record in records:
        metadata = record.get("metadata", {})
        _sum_usage(metadata.get("token_usage", metadata.get("usage")), totals)
    prompt, completion = totals["prompt_tokens"], totals["completion_tokens"]
    return {"prompt": prompt, "completion": completion, "total": prompt + completion}


def _label_counts(records: Sequence[dict[str, Any]], key: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for record in records:
        value = record.get("metadata", {}).get(key)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                item = item.get("id") or item.get("name")
            if item is not None:
                counts[str(item)] += 1
    return dict(sorted(counts.items()))


def sft_statistics(
    train: Sequence[dict[str, Any]],
    valid: Sequence[dict[str, Any]],
    formats: Sequence[str],
    params_fingerprint: str,
) -> dict[str, Any]:
    """The contents of ``data/sft/stats.json`` for one export."""
    records = [*train, *valid]
    every = [conversation_measures(r) for r in records]
    train_tokens = sum(m["estimated_tokens"] for m in every[: len(train)])
    valid_tokens = sum(m["estimated_tokens"] for m in every[len(train) :])
    # Shapes count each conversation once: a compacted episode exported part by part
    # (ise_core.export.seen) is counted by its last part, which runs to its end.
    whole = [(r, m) for r, m in zip(records, every, strict=True) if is_last_part(r)]
    conversations = [r for r, _ in whole]
    measures = [m for _, m in whole]
    user_turns = [m["user_turns"] for m in measures]
    n_errors = sum(m["tool_errors"] for m in measures)
    n_recovered = sum(m["recovered_errors"] for m in measures)
    stats: dict[str, Any] = {
        "n_train": len(train),
        "n_valid": len(valid),
        "n_total": len(records),
        "n_conversations": len(conversations),
        "n_intents": len({r["metadata"].get("intent_id") for r in records}),
        "formats": list(formats),
        "format": "openai",
        "tokens": {
            "recorded": recorded_usage(conversations),
            "estimated_text": {
                "method": f"characters / {CHARS_PER_TOKEN}",
                "train": train_tokens,
                "valid": valid_tokens,
                "total": train_tokens + valid_tokens,
                "mean_per_conversation": round(
                    (train_tokens + valid_tokens) / len(conversations), 1
                )
                if conversations
                else 0.0,
            },
        },
        "user_turns_share_6_10": share_between(user_turns, 6, 10),
        "tool_errors_total": n_errors,
        "recovered_errors_total": n_recovered,
        "recovery_rate": round(n_recovered / n_errors, 4) if n_errors else None,
        "stop_reasons": dict(
            sorted(
                Counter(str(r["metadata"].get("stop_reason", "")) for r in conversations).items()
            )
        ),
        "domains": _label_counts(conversations, "domains"),
        "complexity": _label_counts(conversations, "complexity"),
        "tool_usage": dict(sorted(Counter(t for m in measures for t in m["tools"]).items())),
        "tool_cooccurrence": tool_cooccurrence(m["tools"] for m in measures),
        "params_fingerprint": params_fingerprint,
    }
    for name in DISTRIBUTIONS:
        stats[name] = distribution([m[name] for m in measures])
    return stats


def histogram_rows(dist: dict[str, Any], name: str) -> list[dict[str, int]]:
    """A distribution as DVC-plot rows ``{name, count}``, zero-filled from min to max."""
    histogram = {int(k): v for k, v in dist.get("histogram", {}).items()}
    if not histogram:
        return []
    return [
        {name: value, "count": histogram.get(value, 0)}
        for value in range(min(histogram), max(histogram) + 1)
    ]


def cooccurrence_rows(cooc: dict[str, Any]) -> list[dict[str, Any]]:
    tools = cooc["tools"]
    return [
        {"tool_a": a, "tool_b": b, "count": cooc["counts"][i][j]}
        for i, a in enumerate(tools)
        for j, b in enumerate(tools)
    ]
