"""The episode index: one small row per episode, written by collect, read by the viewer.

A viewer that lists 50,000 episodes cannot open 50,000 files per request. ``collect`` has
every current episode in memory anyway, so it writes ``episode_index.jsonl`` beside
``trajectories.jsonl``: one JSON object per episode (kept, rejected or failed), sorted by
intent id, holding what the episode list filters and sorts on and nothing that differs
between two runs of the same params (no wall-clock times), so the file is reproducible.

Pure: ``index_row`` maps a Trajectory to a row; ``write_index`` / ``read_index`` do the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ise_core.catalog import EPISODE_INDEX
from ise_core.errors import InputError
from ise_core.records import Trajectory, read_json, validate_record, write_jsonl
from ise_core.simulate.metrics import conversation_metrics

INDEX_FILE = EPISODE_INDEX  # the name inside any data root's trajectories folder
SHAPE_KEYS = ("user_turns", "dialogue_turns", "tool_calls", "tool_errors", "recovered_errors")
REQUEST_PREVIEW = 240  # characters of the opening request kept for the list


def _count(value: Any) -> int:
    """A metadata counter that may be recorded as a number or as a list of events."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, list | tuple | dict):
        return len(value)
    return 0


def _mapping(metadata: dict[str, Any], key: str) -> dict[str, Any]:
    value = metadata.get(key)
    return value if isinstance(value, dict) else {}


def _opening_request(episode: Trajectory) -> str:
    for message in episode.messages:
        if message.role == "user":
            text = " ".join((message.content or "").split())
            return text if len(text) <= REQUEST_PREVIEW else text[: REQUEST_PREVIEW - 1] + "…"
    return ""


def _persona(metadata: dict[str, Any]) -> tuple[str, str]:
    persona = metadata.get("persona")
    if not isinstance(persona, dict):
        return "", ""
    label = str(persona.get("name") or "")
    if persona.get("role"):
        label = f"{label} ({persona['role']})" if label else str(persona["role"])
    return str(persona.get("id") or ""), label


def index_row(episode: Trajectory) -> dict[str, Any]:
    """The episode's row: identity, outcome, the facets the list filters on, and its counts.

    ``text_tool_calls`` (calls parsed out of reply text) and ``compactions`` (context
    compactions) are read from the episode's metadata when the simulator recorded them, and
    are 0 otherwise.
    """
    meta = episode.metadata
    shape = conversation_metrics(episode.messages)  # counted from the messages, as collect counts
    drift, usage = _mapping(meta, "role_drift"), _mapping(meta, "token_usage")
    persona_id, persona = _persona(meta)
    return {
        "id": episode.intent_id,
        "status": episode.status,
        "stop_reason": episode.stop_reason,
        "complexity": str(meta.get("complexity") or ""),
        "domains": [str(d) for d in meta.get("domains") or []],
        "persona_id": persona_id,
        "persona": persona,
        "tools": sorted(shape["tool_usage"]),
        **{key: shape[key] for key in SHAPE_KEYS},
        "text_tool_calls": _count(meta.get("text_tool_calls")),
        "compactions": _count(meta.get("compactions")),
        "checks_passed": sum(1 for c in episode.checks if c.passed),
        "checks_total": len(episode.checks),
        "drift_events": _count(drift.get("events")),
        "total_tokens": _count(usage.get("total_tokens")),
        "request": _opening_request(episode),
    }


def write_index(path: Path, episodes: Iterable[Trajectory]) -> Path:
    """Write the index at ``path`` (``Catalog.episode_index``) atomically, one row per
    episode by intent id."""
    rows = sorted((index_row(e) for e in episodes), key=lambda row: row["id"])
    write_jsonl(path, rows)
    return path


def read_index(path: Path) -> list[dict[str, Any]]:
    """The rows of an index file; a malformed line is an InputError naming file and line."""
    from ise_core.records import read_raw_jsonl

    rows = []
    for lineno, row in read_raw_jsonl(path):
        if not isinstance(row.get("id"), str):
            raise InputError(f"{path}:{lineno}: expected an index row with a string id")
        rows.append(row)
    return rows


def rows_from_episodes(folder: Path) -> list[dict[str, Any]]:
    """Index rows built from the episode files themselves (for a data root without an index,
    e.g. one made before collect wrote it); unreadable files are skipped."""
    rows = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = read_json(path)
            rows.append(index_row(validate_record(data, Trajectory, str(path))))
        except InputError:
            continue
    return rows


__all__ = ["INDEX_FILE", "index_row", "read_index", "rows_from_episodes", "write_index"]
