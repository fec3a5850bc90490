"""``refresh.mode: renew`` end to end (scripted LLM, local workspace, in this process).

A plain build makes every intent's episode; each renew period then re-simulates its share of
the intents, keeps the episodes they replace, and leaves every other episode as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ise_core.config import load_settings
from ise_core.refresh.periods import Ledger
from ise_core.refresh.run import refresh_period
from ise_core.stages import STAGES, run_gate
from tests.fakes.params import MANUAL_AIRFLOW, PERMISSIVE_GATES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PERIODS = ["2026-01-04", "2026-01-11"]


def _params(root: Path) -> Path:
    params = {
        "seed": 11,  # its 4 intents fall in both renew buckets (share 0.5)
        "intents": {"count": 4, "taxonomy": str(REPO / "ise_core/taxonomy")},
        "embedding": {"model": "all-MiniLM-L6-v2", "batch_size": 16},
        "llm": {"provider": "scripted", "max_concurrency": 4},
        "workspace": {"backend": "local", "template": str(REPO / "ise_core/workspace/template")},
        "simulate": {"max_turns": 20, "concurrency": 2},
        "export": {"valid_fraction": 0.0},
        "gates": PERMISSIVE_GATES,
        "airflow": {**MANUAL_AIRFLOW, "schedule": "@weekly", "start_date": "2026-01-04"},
        "refresh": {"mode": "renew", "renew_share": 0.5},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def _episodes(root: Path) -> dict[str, bytes]:
    folder = root / "data/trajectories/episodes"
    return {path.stem: path.read_bytes() for path in sorted(folder.glob("*.json"))}


def test_renew_periods_resimulate_their_share_and_keep_what_they_replace(
    tmp_path: Path,
) -> None:
    settings = load_settings(_params(tmp_path))
    for entry in STAGES:  # the plain build: every intent's episode, of no period
        entry.execute(settings)
        if entry.gate is not None:
            run_gate(entry.gate.name, settings, lambda _: None)
    base = _episodes(tmp_path)
    assert len(base) == 4
    assert all("period" not in json.loads(data)["metadata"] for data in base.values())

    renewed: set[str] = set()
    for period in PERIODS:
        before = _episodes(tmp_path)
        refresh_period(settings, period, lineage=False, log=lambda _: None)
        after = _episodes(tmp_path)
        assert set(after) == set(before)  # renew adds no intent
        changed = {name for name in after if after[name] != before[name]}
        stamped = {
            name for name, data in after.items() if json.loads(data)["metadata"].get("period")
        }
        now = {n for n in stamped if json.loads(after[n])["metadata"]["period"] == period}
        assert changed == now and now, (period, changed, now)
        assert not now & renewed  # share 0.5: each intent once in two periods
        renewed |= now
        # The episode each one replaced is kept.
        for name in now:
            archived = tmp_path / "data/refresh/episodes" / name
            assert [p.name for p in archived.glob("*.json")], name
        # A re-run of the period changes nothing.
        refresh_period(settings, period, lineage=False, log=lambda _: None)
        assert _episodes(tmp_path) == after
    assert renewed == set(base)

    ledger = Ledger.load(tmp_path / "data/refresh/periods.json")
    assert [(e.period, e.mode, e.index) for e in ledger.entries] == [
        (PERIODS[0], "renew", 0),
        (PERIODS[1], "renew", 1),
    ]
    history = [
        json.loads(line)
        for line in (tmp_path / "data/refresh/history.jsonl").read_text().splitlines()
    ]
    assert [h["period"] for h in history] == PERIODS
    assert sum(h["renewed"] for h in history) == 4 and all(h["intents_added"] == 0 for h in history)
    # The export holds each intent's newest kept episode: the one of the period that renewed it.
    train = [
        json.loads(line) for line in (tmp_path / "data/sft/train.jsonl").read_text().splitlines()
    ]
    assert {r["metadata"]["intent_id"] for r in train} == set(base)
    assert all(r["metadata"].get("period") in PERIODS for r in train)
