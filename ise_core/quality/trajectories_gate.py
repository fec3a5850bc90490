"""Gate after simulation: are the episodes well-formed and the kept set plausible?

Reads every current ``<simulate.out_dir>/episodes/*.json`` (all episodes, kept or not, of
the intents in intents.jsonl under the current params) and ``trajectories.jsonl`` (the kept
ones); writes ``gate_result.json`` beside them. Four tables:

- ``episodes``: one row per episode file — ids, turn counts, kept ⇒ completed, kept share;
- ``tool_calls``: one row per assistant tool call — exactly one tool message answers it, after
  it, and its arguments string parses as JSON;
- ``tool_results``: one row per tool message — it answers an earlier call;
- ``kept``: one row per line of trajectories.jsonl — kept, known, and turn means in bounds.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ise_core.catalog import Catalog, EpisodeStore
from ise_core.config import Settings
from ise_core.quality.runner import (
    Expect,
    GateReport,
    Table,
    parses_as_json,
    run_gate,
    schema_problem,
)
from ise_core.records import Trajectory, read_raw_jsonl
from ise_core.simulate.metrics import turn_counts


def _messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    messages = data.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def tool_pairing_rows(
    where: str, messages: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows for every tool call and every tool message of one conversation."""
    answers: dict[str, list[int]] = {}
    for index, message in enumerate(messages):
        if message.get("role") == "tool":
            answers.setdefault(str(message.get("tool_call_id")), []).append(index)
    calls: list[dict[str, Any]] = []
    call_positions: dict[str, int] = {}
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or []:
            call_id = str(call.get("id")) if isinstance(call, dict) else ""
            function = call.get("function", {}) if isinstance(call, dict) else {}
            call_positions.setdefault(call_id, index)
            matched = answers.get(call_id, [])
            calls.append(
                {
                    "call": f"{where}#{call_id}",
                    "tool": str(function.get("name", "")),
                    "n_results": len(matched),
                    "result_follows_call": all(i > index for i in matched),
                    "arguments_are_json": parses_as_json(function.get("arguments")),
                }
            )
    results = [
        {
            "result": f"{where}#{message.get('tool_call_id')}",
            "answers_earlier_call": call_positions.get(str(message.get("tool_call_id")), index)
            < index,
        }
        for index, message in enumerate(messages)
        if message.get("role") == "tool"
    ]
    return calls, results


def _episode_row(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    messages = _messages(data)
    user, dialogue = turn_counts(messages)
    kept = data.get("kept") is True
    return {
        "file": f"episodes/{path.name}",
        "schema_problem": schema_problem(data, Trajectory),
        "session_id": str(data.get("session_id", "")),
        "intent_matches_file": data.get("intent_id") == path.stem,
        "kept": int(kept),
        "status_agrees": kept == (data.get("status") == "kept"),
        "kept_implies_completed": (not kept) or data.get("completed") is True,
        "kept_implies_success": (not kept) or data.get("is_success") is not False,
        "user_turns": user,
        "dialogue_turns": dialogue,
    }


def current_episodes(settings: Settings) -> tuple[list[tuple[Path, dict[str, Any]]], int]:
    """The episodes ``collect`` counts (``EpisodeStore.is_current``), as raw JSON objects so a
    schema problem is a finding, and how many others were left as stale."""
    store = EpisodeStore.of(settings)
    episodes = store.load_raw()
    intents = {intent.id: intent for intent in Catalog.of(settings).load_intents()}
    current = [
        (path, data)
        for path, data in episodes
        if store.is_current(data, intents.get(str(data.get("intent_id"))))
    ]
    # Renewed episodes that were not kept stand aside for their intent's last kept one.
    return store.with_fallbacks_raw(current, intents), len(episodes) - len(current)


def gate_trajectories(settings: Settings) -> GateReport:
    """Validate the current episodes and the kept trajectories against ``gates.trajectories``.

    Episodes left behind by earlier params or changed intents are stale: ``collect`` skips
    them, so the gate does too (their count is recorded in the result file).
    """
    files = Catalog.of(settings)
    kept_lines = read_raw_jsonl(files.trajectories)
    episodes, n_stale = current_episodes(settings)
    episode_rows = [_episode_row(path, data) for path, data in episodes]
    call_rows: list[dict[str, Any]] = []
    result_rows: list[dict[str, Any]] = []
    for path, data in episodes:
        calls, results = tool_pairing_rows(f"episodes/{path.name}", _messages(data))
        call_rows += calls
        result_rows += results
    kept_sessions = Counter(r["session_id"] for r in episode_rows if r["kept"])
    kept_rows = [_kept_row(lineno, data, kept_sessions) for lineno, data in kept_lines]
    tables = [
        _episodes_table(settings, episode_rows),
        *_tool_tables(call_rows, result_rows),
        _kept_table(settings, kept_rows, sum(kept_sessions.values())),
    ]
    return run_gate(
        "trajectories", tables, files.trajectories_gate_result, {"n_stale_episodes": n_stale}
    )


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def _kept_row(lineno: int, data: dict[str, Any], kept_sessions: Counter[str]) -> dict[str, Any]:
    user, dialogue = turn_counts(_messages(data))
    session = str(data.get("session_id", ""))
    return {
        "line": f"trajectories.jsonl:{lineno}",
        "session_id": session,
        "kept": data.get("kept") is True,
        "kept_episode_exists": session in kept_sessions,
        "user_turns": user,
        "dialogue_turns": dialogue,
    }


def _in_set(label: str, column: str, values: list[Any], expected: str = "") -> Expect:
    kwargs = {"column": column, "value_set": values}
    return Expect(label, "ExpectColumnValuesToBeInSet", kwargs, expected)


def _episodes_table(settings: Settings, rows: list[dict[str, Any]]) -> Table:
    params = settings.gates.trajectories
    columns = list(_episode_row(Path("x.json"), {}).keys())
    return Table(
        "episodes",
        _frame(rows, columns),
        "file",
        [
            Expect(
                f"at least {params.min_episodes} episodes",
                "ExpectTableRowCountToBeBetween",
                {"min_value": params.min_episodes},
            ),
            _in_set(
                "every episode file is a valid Trajectory",
                "schema_problem",
                [""],
                "no schema problem",
            ),
            _in_set(
                "one episode per intent (file named by its intent id)",
                "intent_matches_file",
                [True],
            ),
            Expect(
                "session ids are unique",
                "ExpectColumnValuesToBeUnique",
                {"column": "session_id"},
            ),
            Expect(
                f"user turns between 1 and max_turns ({settings.simulate.max_turns})",
                "ExpectColumnValuesToBeBetween",
                {"column": "user_turns", "min_value": 1, "max_value": settings.simulate.max_turns},
            ),
            _in_set("status agrees with the kept flag", "status_agrees", [True]),
            _in_set("kept implies completed", "kept_implies_completed", [True]),
            _in_set("kept implies is_success is not false", "kept_implies_success", [True]),
            Expect(
                "kept share at or above the minimum",
                "ExpectColumnMeanToBeBetween",
                {"column": "kept", "min_value": params.min_kept_share},
                f"kept share >= {params.min_kept_share}",
            ),
        ],
    )


def _tool_tables(
    call_rows: list[dict[str, Any]], result_rows: list[dict[str, Any]]
) -> tuple[Table, Table]:
    columns = ["call", "tool", "n_results", "result_follows_call", "arguments_are_json"]
    calls = Table(
        "tool_calls",
        _frame(call_rows, columns),
        "call",
        [
            Expect(
                "each tool call has exactly one matching tool message",
                "ExpectColumnValuesToBeBetween",
                {"column": "n_results", "min_value": 1, "max_value": 1},
                "exactly 1 tool message per call",
            ),
            _in_set("tool messages come after their call", "result_follows_call", [True]),
            _in_set("every arguments string parses as JSON", "arguments_are_json", [True]),
        ],
    )
    results = Table(
        "tool_results",
        _frame(result_rows, ["result", "answers_earlier_call"]),
        "result",
        [
            _in_set(
                "every tool message answers an earlier tool call", "answers_earlier_call", [True]
            ),
        ],
    )
    return calls, results


def _kept_table(settings: Settings, rows: list[dict[str, Any]], n_kept_episodes: int) -> Table:
    columns = ["line", "session_id", "kept", "kept_episode_exists", "user_turns", "dialogue_turns"]
    expectations = [
        Expect(
            "trajectories.jsonl has one line per kept episode",
            "ExpectTableRowCountToEqual",
            {"value": n_kept_episodes},
        ),
        _in_set("trajectories.jsonl holds only kept trajectories", "kept", [True]),
        _in_set("each kept trajectory matches a kept episode file", "kept_episode_exists", [True]),
        Expect(
            "kept session ids are unique", "ExpectColumnValuesToBeUnique", {"column": "session_id"}
        ),
    ]
    # A mean over no trajectories has no value: when nothing is kept, the kept-share
    # expectation alone says whether that is acceptable (gates.trajectories.min_kept_share).
    if rows:
        expectations += _mean_turn_bounds(settings)
    return Table("kept", _frame(rows, columns), "line", expectations)


def _mean_turn_bounds(settings: Settings) -> list[Expect]:
    params = settings.gates.trajectories
    return [
        Expect(
            "mean user turns within bounds",
            "ExpectColumnMeanToBeBetween",
            {
                "column": "user_turns",
                "min_value": params.min_mean_user_turns,
                "max_value": params.max_mean_user_turns,
            },
        ),
        Expect(
            "mean dialogue turns within bounds",
            "ExpectColumnMeanToBeBetween",
            {
                "column": "dialogue_turns",
                "min_value": params.min_mean_dialogue_turns,
                "max_value": params.max_mean_dialogue_turns,
            },
        ),
    ]
