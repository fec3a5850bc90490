"""What each page shows, as plain values (pure apart from reading the data root).

The templates only lay these out; every number and label is decided here, so the pages can
be tested without a browser and the HTML stays free of logic.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ise_core.records import Message, Trajectory
from ise_core.simulate.episode_index import index_row
from ise_core.viewer.data import DataRoot, NotInRoot, episode_index, intent_record

PREVIEW_LINES = 6  # a tool output or argument longer than this starts collapsed
# The stage folders that hold a stats.json and a gate_result.json.
GATE_STAGES = ("intents", "trajectories", "sft")


# --- text blocks -------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A piece of model or tool text, with a preview when it is long enough to collapse."""

    text: str
    lines: int
    preview: str | None  # None: short enough to show whole

    @classmethod
    def of(cls, text: str | None, limit: int = PREVIEW_LINES) -> Block:
        value = text or ""
        lines = value.splitlines() or [""]
        preview = "\n".join(lines[:limit]) if len(lines) > limit else None
        return cls(value, len(lines), preview)


def pretty_arguments(arguments: str) -> str:
    """Tool-call arguments for reading: ``key: value`` lines, a multi-line string value as
    an indented block (a file's content reads as the file); other JSON indented; text that
    is not JSON as written."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    if not isinstance(value, dict) or not value:
        return json.dumps(value, indent=2, ensure_ascii=False)
    lines = []
    for key, item in value.items():
        if isinstance(item, str) and "\n" in item:
            lines.append(f"{key}:")
            lines.extend("  " + line for line in item.splitlines())
        elif isinstance(item, str):
            lines.append(f"{key}: {item}")
        else:
            lines.append(f"{key}: {json.dumps(item, ensure_ascii=False)}")
    return "\n".join(lines)


# --- overview ----------------------------------------------------------------------------


def _get(stats: Mapping[str, Any] | None, *path: str) -> Any:
    value: Any = stats
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def funnel(
    intents: Mapping[str, Any] | None,
    trajectories: Mapping[str, Any] | None,
    sft: Mapping[str, Any] | None,
) -> list[tuple[str, Any]]:
    """sampled → unique → simulated → kept → train / valid (None where a stage has not run)."""
    return [
        ("sampled", _get(intents, "n_sampled")),
        ("unique", _get(intents, "n_unique")),
        ("simulated", _get(trajectories, "n_episodes")),
        ("kept", _get(trajectories, "n_kept")),
        ("train", _get(sft, "n_train")),
        ("valid", _get(sft, "n_valid")),
    ]


def published_rows(
    intents: Mapping[str, Any] | None,
    trajectories: Mapping[str, Any] | None,
    sft: Mapping[str, Any] | None,
) -> list[tuple[str, str, str]]:
    """(metric, this run, published ISE) as the dataset card prints them. Before export,
    the kept trajectories' statistics stand in for the exported ones."""
    from ise_core.export.card import comparison_rows

    shape = sft
    if shape is None and trajectories is not None:
        shape = {**trajectories, "n_total": trajectories.get("n_kept", 0)}
    if shape is None:
        return []
    try:
        return comparison_rows(shape, intents, trajectories)
    except (KeyError, TypeError, ValueError):
        return []  # stats from an older layout: the stage tables still show them


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {format_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    return "" if value is None else str(value)


def stat_rows(stats: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Every entry of a stats.json, flattened one level for a two-column table; long series
    (curves, histograms, co-occurrence) are left to the plots."""
    if not stats:
        return []
    rows = []
    for key, value in sorted(stats.items()):
        if isinstance(value, list) and len(value) > 12:
            continue
        if isinstance(value, Mapping) and any(isinstance(v, Mapping) for v in value.values()):
            for sub, inner in value.items():
                if isinstance(inner, Mapping) and len(inner) > 12:
                    continue
                rows.append((f"{key}.{sub}", format_value(inner)))
            continue
        rows.append((key, format_value(value)))
    return rows


@dataclass
class GateView:
    stage: str
    present: bool
    success: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for row in self.rows if not row["success"])


def gate_view(root: DataRoot, stage: str) -> GateView:
    from ise_core.quality.runner import result_rows

    result = root.gate_result(stage)
    if result is None:
        return GateView(stage, present=False)
    rows = result_rows(result)
    # Failed expectations first (in the gate's order), so they are seen without scrolling.
    rows.sort(key=lambda row: row["success"])
    return GateView(stage, True, bool(result.get("success")), rows)


def plots(root: DataRoot) -> list[tuple[str, str, str]]:
    """(caption, stage, file name) of each PNG plot the run made."""
    found: list[tuple[str, str, str]] = []
    folder = root.folder("plots")
    names = sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []
    for name in names:
        found.append((name[:-4].replace("_", " "), "plots", name))
    curve = root.files.vendi_curve
    if curve.name not in names and curve.is_file():
        found.append(("vendi curve", "intents", curve.name))
    return found


def overview(root: DataRoot) -> dict[str, Any]:
    intents, trajectories, sft = (root.stats(stage) for stage in GATE_STAGES)
    return {
        "funnel": funnel(intents, trajectories, sft),
        "published": published_rows(intents, trajectories, sft),
        "stages": [
            ("intents", stat_rows(intents)),
            ("trajectories", stat_rows(trajectories)),
            ("sft", stat_rows(sft)),
        ],
        "gates": [gate_view(root, stage) for stage in GATE_STAGES],
        "plots": plots(root),
        "ran": any(s is not None for s in (intents, trajectories, sft)),
    }


# --- episode -----------------------------------------------------------------------------


@dataclass
class CallView:
    id: str
    name: str
    arguments: Block
    output: Block | None = None
    success: bool | None = None

    @property
    def error(self) -> bool:
        return self.success is False


@dataclass
class ChatItem:
    """One message as the chat shows it; an assistant's tool calls carry their outputs."""

    role: str
    text: Block
    reasoning: Block | None = None
    calls: list[CallView] = field(default_factory=list)
    index: int = 0


def chat(messages: Sequence[Message]) -> list[ChatItem]:
    """The conversation with each tool output attached to the call it answers."""
    items: list[ChatItem] = []
    open_calls: dict[str, CallView] = {}
    for position, message in enumerate(messages):
        if message.role == "tool" and message.tool_call_id in open_calls:
            call = open_calls.pop(message.tool_call_id or "")
            call.output, call.success = Block.of(message.content), message.success
            continue
        item = ChatItem(
            role=message.role,
            text=Block.of(message.content, limit=PREVIEW_LINES if message.role != "system" else 0),
            reasoning=Block.of(message.reasoning_content) if message.reasoning_content else None,
            index=position,
        )
        if message.role == "tool":  # an output whose call is not in the conversation
            item.calls.append(
                CallView(
                    id=message.tool_call_id or "",
                    name=message.name or "?",
                    arguments=Block.of(""),
                    output=Block.of(message.content),
                    success=message.success,
                )
            )
        for tool_call in message.tool_calls or []:
            view = CallView(
                tool_call.id,
                tool_call.function.name,
                Block.of(pretty_arguments(tool_call.function.arguments)),
            )
            item.calls.append(view)
            open_calls[tool_call.id] = view
        items.append(item)
    return items


def _intent(root: DataRoot, episode: Trajectory) -> dict[str, Any]:
    record = intent_record(root, episode.intent_id)
    meta = episode.metadata
    request = next((m.content or "" for m in episode.messages if m.role == "user"), "")
    base: dict[str, Any] = {
        "found": record is not None,
        "request": request,
        "goal": "",
        "hidden_details": [],
        "success_criteria": [],
        "checks": [result.check.model_dump(exclude_none=True) for result in episode.checks],
        "persona": meta.get("persona") if isinstance(meta.get("persona"), dict) else {},
        "domains": meta.get("domains") or [],
        "tasks": meta.get("tasks") or [],
        "complexity": meta.get("complexity") or "",
    }
    if record is not None:
        for key in ("request", "goal", "hidden_details", "success_criteria", "checks"):
            if record.get(key) is not None:
                base[key] = record[key]
        for key in ("persona", "domains", "tasks", "complexity"):
            base[key] = record.get(key) or base[key]
    return base


def _counts(episode: Trajectory) -> list[tuple[str, Any]]:
    row = index_row(episode)
    return [
        ("user turns", row["user_turns"]),
        ("dialogue turns", row["dialogue_turns"]),
        ("tool calls", row["tool_calls"]),
        ("distinct tools", len(row["tools"])),
        ("tool errors", row["tool_errors"]),
        ("recovered errors", row["recovered_errors"]),
        ("tool calls recovered from text", row["text_tool_calls"]),
        ("context compactions", row["compactions"]),
        ("checks passed", f"{row['checks_passed']} of {row['checks_total']}"),
    ]


def _usage(episode: Trajectory, timing: Mapping[str, Any] | None) -> dict[str, Any]:
    usage = episode.metadata.get("token_usage")
    tokens = []
    if isinstance(usage, Mapping):
        for role in ("user", "agent"):
            part = usage.get(role)
            if isinstance(part, Mapping):
                tokens.append((role, part.get("prompt_tokens"), part.get("completion_tokens")))
    times = []
    if timing:
        labels = (
            ("wall_s", "whole episode"),
            ("open_s", "workspace opening"),
            ("user_llm_s", "user simulator"),
            ("agent_llm_s", "agent"),
            ("tool_s", "tool calls"),
            ("checks_s", "checks"),
        )
        times = [(label, timing[key]) for key, label in labels if key in timing]
    return {
        "tokens": tokens,
        "total_tokens": _get(usage, "total_tokens") if isinstance(usage, Mapping) else None,
        "times": times,
        "started_at": (timing or {}).get("started_at"),
        "requests": _get(timing, "llm", "requests"),
    }


def episode_page(root: DataRoot, intent_id: str) -> dict[str, Any]:
    """Everything the episode page shows (NotInRoot when there is no such episode)."""
    episode = root.episode(intent_id)
    timing = root.optional_json("timing", f"{intent_id}.json")
    drift = episode.metadata.get("role_drift")
    return {
        "episode": episode,
        "intent": _intent(root, episode),
        "chat": chat(episode.messages),
        "counts": _counts(episode),
        "usage": _usage(episode, timing),
        "drift": drift.get("events", []) if isinstance(drift, Mapping) else [],
        "error": episode.metadata.get("error"),
        "closing": _get(episode.metadata, "user_simulator", "closing"),
    }


# --- compare -----------------------------------------------------------------------------

COMPARED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("intents sampled", "intents", ("n_sampled",)),
    ("unique intents", "intents", ("n_unique",)),
    ("Vendi score", "intents", ("vendi_score",)),
    ("episodes", "trajectories", ("n_episodes",)),
    ("kept", "trajectories", ("n_kept",)),
    ("completion rate", "trajectories", ("completion_rate",)),
    ("user turns, mean", "trajectories", ("user_turns", "mean")),
    ("dialogue turns, mean", "trajectories", ("dialogue_turns", "mean")),
    ("tool calls, mean", "trajectories", ("tool_calls", "mean")),
    ("distinct tools, mean", "trajectories", ("distinct_tools", "mean")),
    ("tool errors", "trajectories", ("tool_errors", "total")),
    ("recovered errors", "trajectories", ("recovered_errors", "total")),
    ("role-drift rate", "trajectories", ("role_drift_rate",)),
    ("checks pass rate", "trajectories", ("checks_pass_rate",)),
    ("LLM tokens", "trajectories", ("llm_usage", "total_tokens")),
    ("train conversations", "sft", ("n_train",)),
    ("valid conversations", "sft", ("n_valid",)),
)


def _delta(a: Any, b: Any) -> str:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        diff = b - a
        if diff == 0:
            return "="
        return f"{diff:+,.4g}" if isinstance(diff, float) else f"{diff:+,}"
    return ""


def compare(a: DataRoot, b: DataRoot, limit: int = 500) -> dict[str, Any]:
    """Stats side by side and the intents whose status differs between ``a`` and ``b``."""
    stats = {root.name: {stage: root.stats(stage) for stage in GATE_STAGES} for root in (a, b)}
    metrics = []
    for label, stage, path in COMPARED:
        va, vb = _get(stats[a.name][stage], *path), _get(stats[b.name][stage], *path)
        metrics.append((label, format_value(va), format_value(vb), _delta(va, vb)))
    rows_a, rows_b = episode_index(a).by_id(), episode_index(b).by_id()
    changed = []
    for intent_id in sorted(set(rows_a) | set(rows_b)):
        ra, rb = rows_a.get(intent_id), rows_b.get(intent_id)
        status_a = ra["status"] if ra else "absent"
        status_b = rb["status"] if rb else "absent"
        if status_a != status_b:
            changed.append((intent_id, status_a, ra, status_b, rb))
    transitions = Counter(f"{sa} → {sb}" for _, sa, _, sb, _ in changed)
    return {
        "metrics": metrics,
        "changed": changed[:limit],
        "n_changed": len(changed),
        "transitions": sorted(transitions.items(), key=lambda kv: (-kv[1], kv[0])),
        "limit": limit,
        "fingerprints": [
            (
                stage,
                _get(stats[a.name][stage], "params_fingerprint"),
                _get(stats[b.name][stage], "params_fingerprint"),
            )
            for stage in GATE_STAGES
        ],
    }


def eval_page(root: DataRoot, a: str | None, b: str | None) -> dict[str, Any]:
    """The root's eval runs (headline figures) and, for two of them, the comparison."""
    from ise_core.evaluation.report import compare as compare_runs
    from ise_core.evaluation.report import number

    runs = root.eval_runs()
    listing = []
    for name, metrics in runs.items():
        overall = metrics.get("overall") or {}
        listing.append(
            {
                "name": name,
                "agent": (metrics.get("agent") or {}).get("label", "?"),
                "task_set": metrics.get("task_set", ""),
                "n_tasks": overall.get("n_tasks", 0),
                "k": metrics.get("k", ""),
                **{
                    key: number(overall.get(key))
                    for key in ("score", "completion", "robustness", "safety")
                },
                "pass_at_1": number((overall.get("pass_at_k") or {}).get("1")),
            }
        )
    for chosen in (a, b):
        if chosen and chosen not in runs:
            raise NotInRoot(chosen)
    names = list(runs)
    chosen_a = a or (names[0] if names else None)
    chosen_b = b or (names[1] if len(names) > 1 else None)
    comparison = None
    if chosen_a and chosen_b and chosen_a != chosen_b:
        comparison = compare_runs(runs[chosen_a], runs[chosen_b])
    return {"runs": listing, "a": chosen_a, "b": chosen_b, "comparison": comparison}


__all__ = [
    "Block",
    "CallView",
    "ChatItem",
    "GateView",
    "chat",
    "compare",
    "episode_page",
    "eval_page",
    "format_value",
    "funnel",
    "overview",
    "pretty_arguments",
    "published_rows",
    "stat_rows",
]
