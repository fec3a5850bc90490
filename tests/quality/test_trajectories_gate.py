"""The trajectories gate: passes on well-formed episodes, names each planted defect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ise_core.config import Settings
from ise_core.errors import InputError
from ise_core.quality import gate_trajectories
from ise_core.records import Message, Trajectory, read_json
from tests.quality.stage_outputs import (
    make_intent,
    make_trajectory,
    settings_for,
    write_intents,
    write_trajectories,
)


def _episodes(settings: Settings, n: int = 10, rejected: int = 2) -> list[Trajectory]:
    """Intents written to intents.jsonl and their episodes (not yet written)."""
    intents = [make_intent(i) for i in range(n)]
    write_intents(settings, intents)
    return [
        make_trajectory(intent, user_turns=3 + i % 4, kept=i >= rejected)
        for i, intent in enumerate(intents)
    ]


def test_passes_on_well_formed_episodes(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    write_trajectories(settings, _episodes(settings))

    report = gate_trajectories(settings)

    assert report.passed, report.report
    result = read_json(tmp_path / "data/trajectories/gate_result.json")
    assert result["success"] is True
    assert set(result["validations"]) == {"episodes", "tool_calls", "tool_results", "kept"}


def test_fails_naming_each_planted_defect(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, gates={"trajectories": {"min_kept_share": 0.9}})
    episodes = _episodes(settings)
    # A tool call whose tool message is missing.
    lost = episodes[3]
    dropped = next(i for i, m in enumerate(lost.messages) if m.role == "tool")
    lost.messages.pop(dropped)
    # Arguments that are not JSON.
    garbled = episodes[4]
    call = next(m for m in garbled.messages if m.tool_calls).tool_calls[0]  # type: ignore[index]
    call.function.arguments = "{'command': 'ls'"
    # Kept although the simulator never completed.
    episodes[5] = episodes[5].model_copy(update={"completed": False})
    # Duplicate session id.
    episodes[6] = episodes[6].model_copy(update={"session_id": episodes[7].session_id})
    # A tool message that answers nothing.
    episodes[8].messages.append(
        Message(role="tool", tool_call_id="call_ghost", name="exec", content="", success=True)
    )
    write_trajectories(settings, episodes)

    report = gate_trajectories(settings)

    assert not report.passed
    failed = {f["expectation"]: f for f in report.failures}
    pairing = failed["each tool call has exactly one matching tool message"]
    assert "episodes/intent-00003.json#call_0_exec" in pairing["observed"]
    assert pairing["expected"] == "exactly 1 tool message per call"
    assert "intent-00004.json" in failed["every arguments string parses as JSON"]["observed"]
    assert "intent-00005.json" in failed["kept implies completed"]["observed"]
    assert "session ids are unique" in failed
    assert "every tool message answers an earlier tool call" in failed
    kept_share = failed["kept share at or above the minimum"]
    assert kept_share["observed"] == "0.8" and kept_share["expected"] == "kept share >= 0.9"
    assert "observed:" in report.report and "expected:" in report.report


def test_turn_bounds_come_from_params(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        simulate={"max_turns": 4},
        gates={"trajectories": {"min_mean_user_turns": 5.0, "max_mean_user_turns": 9.0}},
    )
    write_trajectories(settings, _episodes(settings))

    report = gate_trajectories(settings)

    failed = {f["expectation"]: f for f in report.failures}
    assert "user turns between 1 and max_turns (4)" in failed
    assert "mean user turns within bounds" in failed
    assert failed["mean user turns within bounds"]["expected"] == "mean between 5.0 and 9.0"


def test_nothing_kept_is_judged_by_the_kept_share_alone(tmp_path: Path) -> None:
    # A mean over no trajectories has no value: only min_kept_share decides.
    allowed = settings_for(tmp_path / "allowed", gates={"trajectories": {"min_kept_share": 0.0}})
    write_trajectories(allowed, _episodes(allowed, n=4, rejected=4))
    report = gate_trajectories(allowed)
    assert report.passed, report.report

    required = settings_for(tmp_path / "required")
    write_trajectories(required, _episodes(required, n=4, rejected=4))
    failed = {f["expectation"] for f in gate_trajectories(required).failures}
    assert failed == {"kept share at or above the minimum"}


def test_jsonl_must_match_the_kept_episodes(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    out = write_trajectories(settings, _episodes(settings))
    rejected = json.loads((out / "episodes/intent-00000.json").read_text())
    with (out / "trajectories.jsonl").open("a") as handle:
        handle.write(json.dumps(rejected) + "\n")

    failed = {f["expectation"] for f in gate_trajectories(settings).failures}

    assert "trajectories.jsonl has one line per kept episode" in failed
    assert "trajectories.jsonl holds only kept trajectories" in failed
    assert "each kept trajectory matches a kept episode file" in failed


def test_missing_inputs_are_input_errors(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with pytest.raises(InputError, match=r"trajectories\.jsonl"):
        gate_trajectories(settings)
    out = settings.path(settings.simulate.out_dir)
    out.mkdir(parents=True)
    (out / "trajectories.jsonl").write_text("")
    with pytest.raises(InputError, match="episodes"):
        gate_trajectories(settings)


def test_stale_episodes_are_skipped_like_collect_skips_them(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    episodes = _episodes(settings)
    out = write_trajectories(settings, episodes)
    # An episode of an intent no longer in intents.jsonl, from older params, and broken.
    stale = make_trajectory(make_intent(99)).model_dump(mode="json")
    stale["params_fingerprint"] = "0000000000000000"
    stale["messages"] = stale["messages"][:3]
    (out / "episodes/intent-00099.json").write_text(json.dumps(stale))

    report = gate_trajectories(settings)

    assert report.passed, report.report
    result = read_json(out / "gate_result.json")
    assert result["context"] == {"n_stale_episodes": 1}
