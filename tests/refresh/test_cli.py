"""``ise refresh``: what it refuses before writing anything, and ``--history``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ise_core.cli import main

REPO = Path(__file__).resolve().parents[2]


def _params(tmp_path: Path, **refresh: object) -> Path:
    params = {
        "intents": {"count": 2, "taxonomy": str(REPO / "ise_core/taxonomy")},
        "llm": {"provider": "scripted"},
        "airflow": {"schedule": "@weekly", "start_date": "2026-01-01"},
        "refresh": {"intents_per_period": 2, **refresh},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def test_a_period_off_the_schedule_is_refused_with_its_neighbours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(tmp_path)
    assert main(["refresh", "--params", str(params), "--period", "2026-01-05"]) == 2
    err = capsys.readouterr().err
    assert "2026-01-05" in err and "nearest are 2026-01-04 and 2026-01-11" in err
    assert not (tmp_path / "data").exists()  # nothing registered, nothing written


def test_an_unreadable_period_and_a_fixed_mode_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(tmp_path)
    assert main(["refresh", "--params", str(params), "--period", "last week"]) == 2
    assert "expected a date" in capsys.readouterr().err
    fixed = _params(tmp_path, mode="fixed")
    assert main(["refresh", "--params", str(fixed), "--period", "2026-01-04"]) == 2
    assert "refresh.mode" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_history_prints_the_recorded_periods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _params(tmp_path)
    assert main(["refresh", "--params", str(params), "--history"]) == 0
    assert "no period recorded yet" in capsys.readouterr().out
    history = tmp_path / "data/refresh/history.jsonl"
    history.parent.mkdir(parents=True)
    line = {
        "period": "2026-01-04",
        "mode": "grow",
        "intents_added": 2,
        "episodes_kept": 1,
        "tokens": 1234,
        "gates": {"intents": {"passed": True}, "sft": {"passed": True}},
    }
    history.write_text(json.dumps(line) + "\n", encoding="utf-8")
    assert main(["refresh", "--params", str(params), "--history"]) == 0
    out = capsys.readouterr().out
    assert "2026-01-04" in out and "intents:ok sft:ok" in out and "1234" in out
    history.write_text("not json\n", encoding="utf-8")
    assert main(["refresh", "--params", str(params), "--history"]) == 2
    assert "history.jsonl:1: invalid JSON" in capsys.readouterr().err
