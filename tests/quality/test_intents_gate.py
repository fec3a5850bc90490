"""The intents gate: passes on well-formed intents, names each planted defect otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ise_core.errors import InputError
from ise_core.quality import gate_intents
from ise_core.quality.intents_gate import complexity_bounds
from ise_core.records import read_json
from tests.quality.stage_outputs import make_intent, settings_for, write_intents


def test_passes_on_well_formed_intents(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    write_intents(settings, [make_intent(i) for i in range(30)])

    report = gate_intents(settings)

    assert report.passed, report.report
    assert report.failures == []
    result = read_json(tmp_path / "data/intents/gate_result.json")
    assert result["success"] is True
    assert set(result["validations"]) == {"intents", "intent_stats"}


def test_fails_naming_each_planted_defect(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    intents = [make_intent(i) for i in range(30)]
    intents[3] = intents[3].model_copy(update={"id": intents[2].id})  # duplicate id
    intents[5] = intents[5].model_copy(update={"request": intents[4].request.upper() + "!"})
    intents[7] = intents[7].model_copy(update={"domains": ["file-io"] * 1})  # 1 domain
    out = write_intents(settings, intents, vendi_score=2.9, unique_share=0.5)
    # An empty goal cannot be built as a record: plant it in the file as a writer could.
    lines = (out / "intents.jsonl").read_text().splitlines()
    broken = json.loads(lines[9])
    broken["goal"] = "  "
    lines[9] = json.dumps(broken)
    (out / "intents.jsonl").write_text("\n".join(lines) + "\n")

    report = gate_intents(settings)

    assert not report.passed
    failed = {f["expectation"]: f for f in report.failures}
    assert "intent ids are unique" in failed
    assert "intent-00002" in failed["intent ids are unique"]["observed"]
    assert "normalised requests are unique" in failed
    assert "no empty goal" in failed
    assert "intents.jsonl:10" in failed["no empty goal"]["observed"]
    assert "2-3 domains per intent" in failed
    assert "every task belongs to one of the intent's domains" in failed
    assert failed["Vendi score at or above the minimum"]["observed"] == "stats.json: 2.9"
    assert "unique share at or above the minimum" in failed
    for name in ("intent ids are unique", "no empty goal", "Vendi score at or above the minimum"):
        assert name in report.report
    assert "expected: value >= 3.0 (min of 20.0 and 0.1 x 30 intents)" in report.report
    assert read_json(tmp_path / "data/intents/gate_result.json")["success"] is False


def test_complexity_share_far_from_priors_fails(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    intents = [make_intent(i).model_copy(update={"complexity": "simple"}) for i in range(60)]
    write_intents(settings, intents)

    report = gate_intents(settings)

    names = {f["expectation"] for f in report.failures}
    assert "share of simple intents near its prior 0.1" in names
    assert "share of complex intents near its prior 0.5" in names


@pytest.mark.parametrize(
    ("n", "vendi", "passes"),
    [(5, 4.2, True), (5, 0.4, False), (300, 25.0, True), (300, 15.0, False)],
)
def test_vendi_minimum_scales_down_for_small_runs(
    tmp_path: Path, n: int, vendi: float, passes: bool
) -> None:
    settings = settings_for(tmp_path)
    write_intents(settings, [make_intent(i) for i in range(n)], vendi_score=vendi)

    failed = {f["expectation"] for f in gate_intents(settings).failures}

    assert ("Vendi score at or above the minimum" not in failed) is passes


def test_complexity_tolerance_widens_for_small_samples() -> None:
    low_small, high_small = complexity_bounds(0.5, 20, tolerance=0.08, sigmas=3.0)
    low_big, high_big = complexity_bounds(0.5, 50_000, tolerance=0.08, sigmas=3.0)
    assert (low_big, high_big) == (0.42, 0.58)  # the fixed tolerance rules at scale
    assert low_small < 0.25 and high_small > 0.75  # three standard errors at n = 20


def test_missing_intents_file_is_an_input_error(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with pytest.raises(InputError, match=r"intents\.jsonl"):
        gate_intents(settings)
