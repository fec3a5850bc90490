"""Per-period statistics, the growth rows of the card, the history file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ise_core.config import PriceSettings
from ise_core.errors import InputError
from ise_core.records import Trajectory
from ise_core.refresh.history import (
    episodes_by_period,
    growth_rows,
    read_history,
    record_history,
)


def _episode(intent_id: str, period: str | None, kept: bool, tokens: int) -> Trajectory:
    metadata: dict[str, Any] = {
        "token_usage": {
            "user": {"prompt_tokens": tokens // 2, "completion_tokens": 0},
            "agent": {"prompt_tokens": 0, "completion_tokens": tokens // 2},
            "total_tokens": tokens,
        },
        "llm": {"user": "openai:user:small", "agent": "scripted:agent"},
    }
    if period:
        metadata["period"] = period
    return Trajectory(
        intent_id=intent_id,
        session_id=intent_id,
        status="kept" if kept else "rejected",
        stop_reason="completed",
        completed=kept,
        kept=kept,
        messages=[],
        metadata=metadata,
    )


def test_episodes_are_counted_per_period_with_their_cost() -> None:
    episodes = [
        _episode("it-0", None, True, 100),
        _episode("it-1", "2026-01-04", True, 2_000_000),
        _episode("it-2", "2026-01-04", False, 1_000_000),
    ]
    priced = episodes_by_period(episodes, {"small": PriceSettings(prompt=1.0, completion=3.0)})
    assert list(priced) == ["base", "2026-01-04"]
    period = priced["2026-01-04"]
    assert (period["n_episodes"], period["n_kept"], period["tokens"]) == (2, 1, 3_000_000)
    # Only the user role has a price: its prompt tokens, 1.5M at 1.0 per million.
    assert period["cost"] == pytest.approx(1.5)
    assert period["models"] == ["scripted:agent", "small"]
    assert episodes_by_period(episodes, {})["2026-01-04"]["cost"] is None  # no price known


def test_growth_rows_add_up_kept_episodes_in_period_order() -> None:
    intents = {
        "2026-01-11": {"mode": "grow", "n_unique": 2},
        "base": {"n_unique": 3},
        "2026-01-04": {"mode": "grow", "n_unique": 1},
    }
    episodes = {
        "base": {"n_episodes": 3, "n_kept": 3, "tokens": 30},
        "2026-01-04": {"n_episodes": 1, "n_kept": 0, "tokens": 10},
        "2026-01-11": {"n_episodes": 2, "n_kept": 2, "tokens": 20},
    }
    rows = growth_rows(intents, episodes)
    assert [(r["period"], r["kept"], r["cumulative_kept"]) for r in rows] == [
        ("base", 3, 3),
        ("2026-01-04", 0, 3),
        ("2026-01-11", 2, 5),
    ]
    assert growth_rows({"base": {"n_unique": 3}}, {"base": {"n_kept": 3}}) == []  # no period


def test_history_keeps_one_line_per_period_and_the_first_of_a_same_rerun(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    first = {"period": "2026-01-11", "mode": "grow", "intents_added": 2, "gates": {"a": 1}}
    assert record_history(path, first) is True
    assert record_history(path, {"period": "2026-01-04", "mode": "grow", "intents_added": 2})
    before = path.read_bytes()
    # The same facts with other gate figures (a re-run after later periods): unchanged.
    assert record_history(path, {**first, "gates": {"a": 2}}) is False
    assert path.read_bytes() == before
    # Other facts (say, another model made it): the line is replaced.
    assert record_history(path, {**first, "intents_added": 1}) is True
    assert [line["period"] for line in read_history(path)] == ["2026-01-04", "2026-01-11"]
    assert read_history(path)[1]["intents_added"] == 1
    path.write_text(before.decode() + "{not json\n")
    with pytest.raises(InputError, match=r"history\.jsonl:3: invalid JSON"):
        read_history(path)
    assert json.loads(before.decode().splitlines()[0])["period"] == "2026-01-04"
