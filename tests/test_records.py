from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ise_core.atomic import atomic_write_text
from ise_core.errors import InputError
from ise_core.records import (
    Check,
    FixtureFile,
    Message,
    ToolCall,
    normalize_text,
    read_json,
    read_jsonl,
    write_jsonl,
)


def test_jsonl_round_trip_is_exact(tmp_path: Path) -> None:
    messages = [
        Message(role="user", content="make a report"),
        Message(
            role="assistant",
            tool_calls=[
                ToolCall(id="c1", function={"name": "exec", "arguments": '{"command": "ls"}'})
            ],
        ),
        Message(role="tool", tool_call_id="c1", name="exec", content="a.txt\n", success=True),
    ]
    path = tmp_path / "m.jsonl"
    assert write_jsonl(path, messages) == 3
    assert read_jsonl(path, Message) == messages
    first = path.read_bytes()
    write_jsonl(path, messages)
    assert path.read_bytes() == first


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"role": "user", "content": "hi"}\n{"role": "user", "content": \n', "utf-8")
    with pytest.raises(InputError, match=r"m\.jsonl:2: invalid JSON"):
        read_jsonl(path, Message)
    path.write_text('{"role": "user"}\n\n{"role": "robot"}\n', "utf-8")
    with pytest.raises(InputError, match=r"m\.jsonl:3: field role"):
        read_jsonl(path, Message)
    path.write_text("[1, 2]\n", "utf-8")
    with pytest.raises(InputError, match=r"m\.jsonl:1: expected a JSON object"):
        read_jsonl(path, Message)
    path.write_bytes(b'{"role": "user"}\n\xff\xfe\n')
    with pytest.raises(InputError, match=r"not UTF-8"):
        read_jsonl(path, Message)
    with pytest.raises(InputError, match=r"missing\.jsonl: file not found"):
        read_jsonl(tmp_path / "missing.jsonl", Message)


def test_unknown_fields_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"role": "user", "content": "x", "colour": "red"}) + "\n", "utf-8")
    with pytest.raises(InputError, match="colour"):
        read_jsonl(path, Message)


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")

    class Boom:
        pass

    with pytest.raises(TypeError):
        write_jsonl(target, [{"x": 1}, {"x": Boom()}])
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    assert os.access(target, os.R_OK)


def test_read_json_reports_position(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{\n  "a": 1,\n  oops\n}', "utf-8")
    with pytest.raises(InputError, match=r"s\.json:3: invalid JSON"):
        read_json(path)


def test_checks_and_fixtures_validate_their_fields() -> None:
    assert Check(kind="file_contains", path="a.md", text="total").text == "total"
    with pytest.raises(ValueError, match="needs text"):
        Check(kind="file_contains", path="a.md")
    with pytest.raises(ValueError, match="needs command"):
        Check(kind="command_succeeds")
    with pytest.raises(ValueError, match="relative path"):
        FixtureFile(path="../etc/passwd", content="")
    with pytest.raises(ValueError, match="relative path"):
        FixtureFile(path="/etc/passwd", content="")


def test_normalize_text_folds_case_punctuation_and_space() -> None:
    assert normalize_text("  Fix the  CI, please!! ") == normalize_text("fix the ci please")
    assert normalize_text("Ｆｉｘ") == "fix"
