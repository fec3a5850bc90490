"""What each refresh period added: per-period statistics, the history file, the growth table.

Stage statistics carry a ``periods`` block only when the ledger lists periods (so a dataset of
no period keeps its exact bytes); its keys are ``base`` (the intents of ``intents.count`` and
their episodes) and the period ids:

- ``data/intents/stats.json``: per period the batch it drew and how many intents survived
  de-duplication (``intents_by_period``);
- ``data/trajectories/stats.json``: per period the episodes it made, how many were kept,
  their tokens and estimated cost (``episodes_by_period``).

``data/refresh/history.jsonl`` has one line per finished period (``history_line``): what it
added, the models and fingerprints that made it, and its gate results. Everything in a line
is derived from the data, never from a clock, so re-running a period rewrites the same line.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ise_core.atomic import atomic_write_text
from ise_core.config import PriceSettings, Settings
from ise_core.errors import InputError
from ise_core.records import IntentSample, Trajectory, read_json, read_raw_jsonl
from ise_core.refresh.periods import BASE, Ledger, PeriodEntry

PER_MILLION = 1_000_000


def period_keys(periods: Mapping[str, Any]) -> list[str]:
    """The keys of a ``periods`` block in order: ``base`` first, then the periods by id."""
    return sorted(periods, key=lambda key: "" if key == BASE else key)


def intents_by_period(
    ledger: Ledger, samples: Sequence[IntentSample], kept: Sequence[Any]
) -> dict[str, Any]:
    """Per period (and ``base``): the samples it drew and the unique intents it kept."""
    owner = ledger.period_of_index()
    sampled = Counter(owner.get(sample.index, BASE) for sample in samples)
    unique = Counter(getattr(intent, "period", None) or BASE for intent in kept)
    block: dict[str, Any] = {}
    if sampled.get(BASE):
        block[BASE] = {"n_sampled": sampled[BASE], "n_unique": unique.get(BASE, 0)}
    for entry in ledger.entries:
        row: dict[str, Any] = {"mode": entry.mode, "index": entry.index}
        if entry.mode == "grow":
            row.update(first=entry.first, n_sampled=sampled.get(entry.period, 0))
            row["n_unique"] = unique.get(entry.period, 0)
        else:
            row["share"] = entry.share
        block[entry.period] = row
    return block


def _model_of(seat: str) -> str:
    """The model behind a seat name (``openai:agent:my-model`` → ``my-model``)."""
    return seat.split(":", 2)[2] if seat.startswith("openai:") and seat.count(":") >= 2 else seat


def _episode_cost(episode: Trajectory, prices: Mapping[str, PriceSettings]) -> float | None:
    usage = episode.metadata.get("token_usage") or {}
    seats = episode.metadata.get("llm") or {}
    cost: float | None = None
    for role in ("user", "agent"):
        price = prices.get(_model_of(str(seats.get(role, ""))))
        counts = usage.get(role) or {}
        if price is not None:
            cost = (cost or 0.0) + (
                int(counts.get("prompt_tokens", 0)) * price.prompt
                + int(counts.get("completion_tokens", 0)) * price.completion
            ) / PER_MILLION
    return cost


def episodes_by_period(
    episodes: Sequence[Trajectory], prices: Mapping[str, PriceSettings]
) -> dict[str, Any]:
    """Per period (and ``base``): episodes, kept ones, tokens and the estimated cost (null
    when no model that played in them has a price in ``llm.prices``)."""
    block: dict[str, dict[str, Any]] = {}
    for episode in episodes:
        key = str(episode.metadata.get("period") or BASE)
        row = block.setdefault(
            key, {"n_episodes": 0, "n_kept": 0, "tokens": 0, "cost": None, "models": []}
        )
        row["n_episodes"] += 1
        row["n_kept"] += int(episode.kept)
        row["tokens"] += int((episode.metadata.get("token_usage") or {}).get("total_tokens", 0))
        cost = _episode_cost(episode, prices)
        if cost is not None:
            row["cost"] = round((row["cost"] or 0.0) + cost, 6)
        seats = episode.metadata.get("llm") or {}
        for seat in (seats.get("user"), seats.get("agent")):
            if seat and _model_of(str(seat)) not in row["models"]:
                row["models"].append(_model_of(str(seat)))
    for row in block.values():
        row["models"] = sorted(row["models"])
    return {key: block[key] for key in period_keys(block)}


# --- the growth table (the dataset card) -----------------------------------------------------


def growth_rows(
    intents_periods: Mapping[str, Any], episode_periods: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One row per period (``base`` first): intents added, episodes, kept, cumulative kept,
    tokens, cost. Empty when neither statistics block lists a period."""
    keys = period_keys({**intents_periods, **episode_periods})
    if keys in ([], [BASE]):
        return []
    rows, total = [], 0
    for key in keys:
        intents = intents_periods.get(key) or {}
        episodes = episode_periods.get(key) or {}
        kept = int(episodes.get("n_kept", 0))
        total += kept
        rows.append(
            {
                "period": key,
                "mode": intents.get("mode", "grow" if key != BASE else BASE),
                "intents_added": int(intents.get("n_unique", 0)),
                "episodes": int(episodes.get("n_episodes", 0)),
                "kept": kept,
                "cumulative_kept": total,
                "tokens": int(episodes.get("tokens", 0)),
                "cost": episodes.get("cost"),
            }
        )
    return rows


# --- the history file ------------------------------------------------------------------------


def _gate_outcome(path: Path) -> dict[str, Any]:
    """A gate's verdict from its result file: passed, and how many expectations held."""
    if not path.is_file():
        return {"passed": None}
    result = read_json(path)
    if not isinstance(result, dict):
        raise InputError(f"{path}: expected a gate result object")
    total = sum(
        len((validation or {}).get("results") or [])
        for validation in (result.get("validations") or {}).values()
    )
    failed = len(result.get("failures") or [])
    return {"passed": bool(result.get("success")), "held": total - failed, "expectations": total}


def history_line(
    settings: Settings,
    entry: PeriodEntry,
    stats: Mapping[str, Mapping[str, Any]],
    gates: Mapping[str, Path],
    fingerprints: Mapping[str, str],
) -> dict[str, Any]:
    """The history record of one finished period. ``stats`` holds the ``intents``,
    ``trajectories`` and ``sft`` statistics; ``gates`` each gate's result file."""
    intents = (stats["intents"].get("periods") or {}).get(entry.period) or {}
    episodes = (stats["trajectories"].get("periods") or {}).get(entry.period) or {}
    line: dict[str, Any] = {
        "period": entry.period,
        "index": entry.index,
        "mode": entry.mode,
        "intents_added": int(intents.get("n_unique", 0)),
        "episodes": int(episodes.get("n_episodes", 0)),
        "episodes_kept": int(episodes.get("n_kept", 0)),
        "tokens": int(episodes.get("tokens", 0)),
        "cost": episodes.get("cost"),
        "models": {
            role: str(settings.llm.role(role).get("model") or settings.llm.role(role)["provider"])
            for role in ("writer", "user", "agent")
        },
        "fingerprints": dict(fingerprints),
        "gates": {name: _gate_outcome(path) for name, path in gates.items()},
        "dataset": {
            "intents": int(stats["intents"].get("n_unique", 0)),
            "kept": int(stats["trajectories"].get("n_kept", 0)),
            "train": int(stats["sft"].get("n_train", 0)),
            "valid": int(stats["sft"].get("n_valid", 0)),
        },
    }
    if entry.mode == "grow":
        line["batch"] = {"first": entry.first, "count": entry.count}
    else:
        line["renewed"] = line["episodes"]
    return line


# What a period did; a re-run that did the same keeps the line it wrote first (its gates and
# dataset totals describe the dataset as it was then).
_FACTS = ("period", "index", "mode", "intents_added", "episodes", "episodes_kept", "tokens")


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    lines = []
    for number, value in read_raw_jsonl(path):
        if "period" not in value:
            raise InputError(f"{path}:{number}: expected a period record")
        lines.append(value)
    return lines


def record_history(path: Path, line: Mapping[str, Any]) -> bool:
    """Add (or replace) the period's line, in period order; returns whether the file changed.

    A line whose facts are those already recorded for the period is left as it was."""
    lines = read_history(path)
    previous = next((old for old in lines if old["period"] == line["period"]), None)
    if previous is not None and all(previous.get(k) == line.get(k) for k in _FACTS):
        return False
    kept = [old for old in lines if old["period"] != line["period"]] + [dict(line)]
    kept.sort(key=lambda record: str(record["period"]))
    text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in kept)
    atomic_write_text(path, text)
    return True


__all__ = [
    "episodes_by_period",
    "growth_rows",
    "history_line",
    "intents_by_period",
    "period_keys",
    "read_history",
    "record_history",
]
