"""The SFT gate: passes on a real export, names each planted defect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ise_core.errors import InputError
from ise_core.export import export_stage
from ise_core.quality import gate_sft
from ise_core.quality.sft_gate import role_order_problem
from tests.quality.stage_outputs import build_pipeline_outputs


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_passes_on_exported_data(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=24, export={"valid_fraction": 0.2})
    export_stage(settings)

    report = gate_sft(settings)

    assert report.passed, report.report
    assert (tmp_path / "data/sft/gate_result.json").is_file()


def test_fails_naming_each_planted_defect(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=24, export={"valid_fraction": 0.2})
    export_stage(settings)
    out = tmp_path / "data/sft"
    train, valid = _read(out / "train.jsonl"), _read(out / "valid.jsonl")
    # Tool result moved before the assistant call it answers (line 1).
    messages = train[0]["messages"]
    messages.insert(2, messages.pop(3))
    # Empty user turn (line 2).
    train[1]["messages"][1]["content"] = "   "
    # The same request exported twice, and its intent in both splits (appended to valid).
    duplicate = json.loads(json.dumps(train[2]))
    valid.append(duplicate)
    # A line without final_output (line 4).
    del train[3]["final_output"]
    _write(out / "train.jsonl", train)
    _write(out / "valid.jsonl", valid)

    report = gate_sft(settings)

    assert not report.passed
    failed = {f["expectation"]: f for f in report.failures}
    assert "train.jsonl:1" in failed["valid role order"]["observed"]
    assert "without a pending assistant tool call" in failed["valid role order"]["observed"]
    assert "train.jsonl:2" in failed["no empty content where content is required"]["observed"]
    disjoint = failed["train and valid are disjoint by intent"]["observed"]
    assert "train.jsonl:3" in disjoint and f"valid.jsonl:{len(valid)}" in disjoint
    assert "no two conversations from the same normalised request" in failed
    assert "train.jsonl:4" in failed["every line matches the SFT schema"]["observed"]
    assert "final_output" in failed["every line matches the SFT schema"]["observed"]


def test_role_order_rules() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "exec", "arguments": "{}"}}
    system = {"role": "system", "content": "s"}
    user = {"role": "user", "content": "u"}
    calling = {"role": "assistant", "content": None, "tool_calls": [call]}
    result = {"role": "tool", "tool_call_id": "c1", "name": "exec", "content": "ok"}
    reply = {"role": "assistant", "content": "done"}
    assert role_order_problem([system, user, calling, result, reply]) == ""
    assert role_order_problem([user, calling, result]) == "first message is not system"
    assert "unanswered" in role_order_problem([system, user, calling])
    assert "before every tool call was answered" in role_order_problem(
        [system, user, calling, reply, result]
    )
    assert "system after the start" in role_order_problem([system, user, system])
    assert "without a pending" in role_order_problem([system, user, calling, result, result])


def test_min_rows_come_from_params(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(
        tmp_path, n=6, export={"valid_fraction": 0.0}, gates={"sft": {"min_valid_rows": 1}}
    )
    export_stage(settings)

    failed = {f["expectation"]: f for f in gate_sft(settings).failures}

    assert failed["at least 1 valid conversations"]["observed"] == "splits: 0"


def test_missing_split_file_is_an_input_error(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=4)
    with pytest.raises(InputError, match=r"train\.jsonl"):
        gate_sft(settings)
