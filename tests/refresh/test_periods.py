"""Periods of the schedule, the ledger of the ones a dataset covers, and their batches."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ise_core.catalog import intent_hash
from ise_core.config import Settings, settings_from_dict
from ise_core.errors import ConfigError, InputError
from ise_core.intents.sample import sample_intents
from ise_core.intents.taxonomy import load_taxonomy
from ise_core.records import Intent
from ise_core.refresh.periods import (
    Ledger,
    PeriodEntry,
    new_entry,
    normalize_period,
    parse_period,
    period_id,
    period_index,
)

REPO = Path(__file__).resolve().parents[2]


def _settings(**blocks: object) -> Settings:
    data = {
        "intents": {"count": 3, "taxonomy": str(REPO / "ise_core/taxonomy")},
        "airflow": {"schedule": "@weekly", "start_date": "2026-01-01"},
        "refresh": {"intents_per_period": 2},
    }
    data.update(blocks)
    return settings_from_dict(data)


def test_period_ids_are_interval_starts_in_utc() -> None:
    assert period_id(datetime(2026, 1, 4, tzinfo=UTC)) == "2026-01-04"
    assert period_id(datetime(2026, 1, 4, 6, 30, tzinfo=UTC)) == "2026-01-04T0630"
    assert normalize_period("2026-01-04T06:30:00+00:00") == "2026-01-04T0630"
    assert normalize_period("2026-01-04T0630") == "2026-01-04T0630"
    assert parse_period("2026-01-04") == datetime(2026, 1, 4, tzinfo=UTC)
    with pytest.raises(ConfigError, match="expected a date"):
        parse_period("last week")


def test_index_counts_intervals_of_the_schedule_from_its_start_date() -> None:
    settings = _settings()
    # @weekly is Sunday midnight; the first Sunday on or after 2026-01-01 is the 4th.
    assert period_index(settings, parse_period("2026-01-04")) == 0
    assert period_index(settings, parse_period("2026-01-25")) == 3
    with pytest.raises(ConfigError, match="nearest are 2026-01-04 and 2026-01-11"):
        period_index(settings, parse_period("2026-01-05"))
    with pytest.raises(ConfigError, match="before the first interval"):
        period_index(settings, parse_period("2025-12-28"))
    manual = _settings(airflow={"schedule": None})
    with pytest.raises(ConfigError, match=r"airflow\.schedule"):
        period_index(manual, parse_period("2026-01-04"))
    daily = _settings(airflow={"schedule": "0 6 * * *", "start_date": "2026-01-01"})
    assert period_index(daily, parse_period("2026-01-03T0600")) == 2


def test_a_grow_period_draws_the_batch_of_its_index() -> None:
    settings = _settings()
    entry = new_entry(settings, "2026-01-18", Ledger())
    # intents.count + k * n = 3 + 2 * 2
    assert (entry.mode, entry.index, entry.first, entry.count) == ("grow", 2, 7, 2)
    # A registered period keeps its batch even when the params change afterwards.
    changed = _settings(refresh={"intents_per_period": 5})
    ledger = Ledger((entry,))
    assert new_entry(changed, "2026-01-18", ledger) is entry
    with pytest.raises(ConfigError, match="fixed"):
        new_entry(_settings(refresh={"mode": "fixed"}), "2026-01-18", Ledger())


def test_the_ledger_round_trips_and_reports_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "periods.json"
    assert not Ledger.load(path)  # no file: no periods
    grow = PeriodEntry(period="2026-01-11", index=1, mode="grow", first=5, count=2)
    renew = PeriodEntry(period="2026-01-04", index=0, mode="renew", share=0.5)
    Ledger((grow, renew)).save(path)
    loaded = Ledger.load(path)
    assert [e.period for e in loaded.entries] == ["2026-01-04", "2026-01-11"]  # by period
    assert json.loads(path.read_text())["periods"][0] == {
        "index": 0,
        "mode": "renew",
        "period": "2026-01-04",
        "share": 0.5,
    }  # absent, not null, for what a mode does not use
    path.write_text('{"periods": [{"period": "2026-01-11", "index": -1, "mode": "grow"}]}')
    with pytest.raises(InputError, match=r"periods.json: period 1: .*index"):
        Ledger.load(path)
    late = PeriodEntry(period="2026-01-18", index=2, mode="grow", first=6, count=3)
    overlapping = Ledger((grow, late))
    with pytest.raises(InputError, match="overlap"):
        overlapping.check("periods.json")


def test_sample_indices_keep_the_base_and_refuse_a_base_grown_into_a_batch() -> None:
    ledger = Ledger((PeriodEntry(period="2026-01-11", index=1, mode="grow", first=5, count=2),))
    assert ledger.sample_indices(3) == [0, 1, 2, 5, 6]
    with pytest.raises(ConfigError, match=r"intents\.count: 6 reaches into the batch of period"):
        ledger.sample_indices(6)


def test_a_batch_is_the_same_samples_whatever_else_is_drawn() -> None:
    settings = _settings()
    taxonomy = load_taxonomy(REPO / "ise_core/taxonomy")
    whole = sample_intents(taxonomy, settings.intents, 7, count=9)
    picked = sample_intents(taxonomy, settings.intents, 7, indices=[0, 1, 2, 7, 8])
    assert [s.model_dump_json() for s in picked] == [
        whole[i].model_dump_json() for i in (0, 1, 2, 7, 8)
    ]


def _intent(index: int, period: str | None = None) -> Intent:
    sample = sample_intents(
        load_taxonomy(REPO / "ise_core/taxonomy"),
        _settings().intents,
        7,
        indices=[index],
    )[0]
    spec = {
        "request": "Please tidy the reports folder.",
        "goal": "tidy",
        "success_criteria": ["done"],
        "checks": [{"kind": "file_exists", "path": "reports"}],
    }
    return Intent.model_validate({**sample.model_dump(), **spec, "period": period})


def test_an_intent_of_no_period_has_no_period_field() -> None:
    plain = _intent(0)
    assert "period" not in json.loads(plain.model_dump_json())
    assert "period" not in plain.model_dump(mode="json")
    dated = plain.model_copy(update={"period": "2026-01-04"})
    assert json.loads(dated.model_dump_json())["period"] == "2026-01-04"
    assert intent_hash(dated) != intent_hash(plain)


def test_renew_periods_roll_over_every_intent_once_per_cycle() -> None:
    intents = [_intent(i) for i in range(40)]
    entries = [
        PeriodEntry(period=f"2026-02-{1 + 7 * k:02d}", index=k, mode="renew", share=0.25)
        for k in range(4)
    ]
    ledger = Ledger(tuple(entries))
    chosen = [set(ledger.renewed(entry, intents, seed=7)) for entry in entries]
    assert all(chosen), "every period renews some intents"
    everyone = set().union(*chosen)
    assert everyone == {i.id for i in intents}
    assert sum(len(c) for c in chosen) == len(intents)  # each exactly once in four periods
    # The period an intent's episode belongs to is the last one that renewed it.
    first = next(iter(chosen[1]))
    intent = next(i for i in intents if i.id == first)
    assert ledger.episode_period(intent, seed=7) == entries[1].period
    # An intent added after a renew period is not renewed by it.
    late = intent.model_copy(update={"period": "2026-03-01"})
    assert ledger.episode_period(late, seed=7) == "2026-03-01"
