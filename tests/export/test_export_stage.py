"""Export: the OpenAI layout, the seeded split by intent, determinism and extra formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ise_core.errors import InputError
from ise_core.export import export_stage, split_by_intent
from tests.quality.stage_outputs import build_pipeline_outputs, settings_for

ALL_FORMATS = {"formats": ["openai", "sharegpt", "parquet"], "valid_fraction": 0.25}


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_follow_the_openai_layout(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=8, rejected=2)
    summary = export_stage(settings)

    rows = _lines(tmp_path / "data/sft/train.jsonl") + _lines(tmp_path / "data/sft/valid.jsonl")
    assert len(rows) == 6 == summary["n_train"] + summary["n_valid"]  # rejected ones left out
    for row in rows:
        assert list(row) == ["messages", "tools", "final_output", "metadata"]
        messages = row["messages"]
        assert [m["role"] for m in messages[:2]] == ["system", "user"]
        calls = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls", [])]
        results = [m for m in messages if m["role"] == "tool"]
        assert calls and len(calls) == len(results)
        for call in calls:
            assert isinstance(json.loads(call["function"]["arguments"]), dict)
        for result in results:
            assert {"tool_call_id", "name", "content", "success"} <= set(result)
        assert {t["function"]["name"] for t in row["tools"]} == {"exec", "write", "read"}
        meta = row["metadata"]
        for key in ("intent_id", "session_id", "persona", "domains", "tasks", "complexity"):
            assert key in meta
        assert row["final_output"]


def test_split_is_by_intent_seeded_and_byte_identical(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=40, rejected=0, export=ALL_FORMATS)
    out = tmp_path / "data/sft"
    export_stage(settings)
    first = {
        name: (out / name).read_bytes()
        for name in ("train.jsonl", "valid.jsonl", "sharegpt/train.jsonl", "parquet/train.parquet")
    }
    export_stage(settings)
    for name, data in first.items():
        assert (out / name).read_bytes() == data, name

    train_ids = {r["metadata"]["intent_id"] for r in _lines(out / "train.jsonl")}
    valid_ids = {r["metadata"]["intent_id"] for r in _lines(out / "valid.jsonl")}
    assert train_ids and valid_ids and not train_ids & valid_ids
    assert len(train_ids | valid_ids) == 40

    reseeded = settings.model_copy(update={"seed": settings.seed + 1})
    export_stage(reseeded)
    assert {r["metadata"]["intent_id"] for r in _lines(out / "valid.jsonl")} != valid_ids


def test_split_keeps_an_intents_side_as_the_dataset_grows() -> None:
    ids = [f"intent-{i:05d}" for i in range(2000)]
    train, valid = split_by_intent(ids, 0.1, seed=7)
    assert not train & valid and len(train | valid) == 2000
    assert 150 < len(valid) < 250
    grown_train, grown_valid = split_by_intent([*ids, *(f"new-{i}" for i in range(500))], 0.1, 7)
    assert valid <= grown_valid and train <= grown_train
    assert split_by_intent(ids[:3], 0.05, 7)[1]  # tiny runs still get a validation intent
    assert split_by_intent(ids[:3], 0.0, 7)[1] == set()


def test_every_format_loads_with_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    settings = build_pipeline_outputs(tmp_path, n=12, rejected=0, export=ALL_FORMATS)
    summary = export_stage(settings)
    out = tmp_path / "data/sft"
    cache = str(tmp_path / "hf-cache")
    for builder, train, valid in (
        ("json", "train.jsonl", "valid.jsonl"),
        ("json", "sharegpt/train.jsonl", "sharegpt/valid.jsonl"),
        ("parquet", "parquet/train.parquet", "parquet/valid.parquet"),
    ):
        loaded = datasets.load_dataset(
            builder,
            data_files={"train": str(out / train), "validation": str(out / valid)},
            cache_dir=cache,
        )
        assert loaded["train"].num_rows == summary["n_train"], train
        assert loaded["validation"].num_rows == summary["n_valid"], valid
    sharegpt = datasets.load_dataset(
        "json", data_files=str(out / "sharegpt/train.jsonl"), cache_dir=cache
    )["train"][0]
    roles = [turn["from"] for turn in sharegpt["conversations"]]
    assert roles[0] == "human" and "function_call" in roles and "observation" in roles
    assert json.loads(sharegpt["tools"])[0]["type"] == "function"
    call = next(t for t in sharegpt["conversations"] if t["from"] == "function_call")
    parallel = json.loads(call["value"])  # the fixture's assistant calls exec and write at once
    assert [c["name"] for c in parallel] == ["exec", "write"]
    assert parallel[0]["arguments"] == {"command": "cat missing.txt"}


def test_sharegpt_turns_alternate_as_llama_factory_requires(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=6, rejected=0, export=ALL_FORMATS)
    export_stage(settings)
    openai_rows = _lines(tmp_path / "data/sft/train.jsonl")
    sharegpt_rows = _lines(tmp_path / "data/sft/sharegpt/train.jsonl")
    for source, row in zip(openai_rows, sharegpt_rows, strict=True):
        turns = row["conversations"]
        for index, turn in enumerate(turns):
            allowed = ("human", "observation") if index % 2 == 0 else ("gpt", "function_call")
            assert turn["from"] in allowed, (index, turn["from"])
        assert turns[-1]["from"] == "gpt"
        assert row["system"] == source["messages"][0]["content"]
        n_calls = sum(1 for m in source["messages"] if m.get("tool_calls"))
        assert sum(1 for t in turns if t["from"] == "function_call") == n_calls
        observation = json.loads(next(t for t in turns if t["from"] == "observation")["value"])
        assert observation[0].startswith("cat: missing.txt")


def test_dropped_format_leaves_no_stale_files(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=6, export=ALL_FORMATS)
    export_stage(settings)
    assert (tmp_path / "data/sft/sharegpt/train.jsonl").is_file()
    narrowed = settings.model_copy(
        update={"export": settings.export.model_copy(update={"formats": ["openai"]})}
    )
    export_stage(narrowed)
    assert not (tmp_path / "data/sft/sharegpt/train.jsonl").exists()
    assert not (tmp_path / "data/sft/parquet/train.parquet").exists()


def test_missing_trajectories_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"trajectories\.jsonl"):
        export_stage(settings_for(tmp_path))
