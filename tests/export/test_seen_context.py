"""The export of compacted episodes (export.context) and of episodes whose tool calls were read
from reply text (export.text_tool_calls), through the export stage and the SFT gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ise_core.export import export_stage
from ise_core.llm.context import MARKER
from ise_core.quality.sft_gate import gate_sft
from ise_core.records import Trajectory, iter_jsonl
from tests.quality.stage_outputs import build_pipeline_outputs, write_trajectories

FORMATS = {"formats": ["openai", "sharegpt", "parquet"], "valid_fraction": 0.0}
LONG = "x" * 5000  # a tool output long enough to be cut to head and tail


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _compacted(trajectory: Trajectory) -> Trajectory:
    """The first tool output made long, and every reply after the first call recorded as
    sent with it cut (as the simulator records a compacted request)."""
    messages = list(trajectory.messages)
    first_tool = next(i for i, m in enumerate(messages) if m.role == "tool")
    messages[first_tool] = messages[first_tool].model_copy(update={"content": LONG})
    replies = [i for i, m in enumerate(messages) if m.role == "assistant"]
    views = [{"reply": r, "cut": [first_tool]} for r in replies[1:]]
    metadata = {**trajectory.metadata, "compactions": len(views), "compacted_context": views}
    return trajectory.model_copy(update={"messages": messages, "metadata": metadata})


def _project(tmp_path: Path, **export: Any) -> tuple[Any, list[Trajectory]]:
    settings = build_pipeline_outputs(tmp_path, n=4, rejected=0, export={**FORMATS, **export})
    out = settings.path(settings.simulate.out_dir)
    episodes = list(iter_jsonl(out / "trajectories.jsonl", Trajectory))
    episodes[0] = _compacted(episodes[0])
    episodes[1] = episodes[1].model_copy(
        update={"metadata": {**episodes[1].metadata, "text_tool_calls": 2}}
    )
    write_trajectories(settings, episodes)
    return settings, episodes


def test_a_compacted_episode_is_exported_as_the_model_saw_it(tmp_path: Path) -> None:
    settings, episodes = _project(tmp_path)
    summary = export_stage(settings)
    rows = _lines(tmp_path / "data/sft/train.jsonl")
    mine = [r for r in rows if r["metadata"]["intent_id"] == episodes[0].intent_id]
    assert len(rows) == summary["n_train"] == 3 + 2 and len(mine) == 2
    first, second = mine
    assert first["metadata"]["context_part"] == {"index": 1, "count": 2, "cut": []}
    assert second["metadata"]["context_part"]["cut"] == [3]
    # Part 1: the first reply (two calls), trained, and the results answering it, whole.
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert LONG in json.dumps(first) and not any("weight" in m for m in first["messages"])
    # Part 2: the whole conversation, the output cut as sent, the first reply not trained.
    assert MARKER.format(cut=4000) in second["messages"][3]["content"]
    weights = [m.get("weight") for m in second["messages"] if m["role"] == "assistant"]
    assert weights[0] == 0 and set(weights[1:]) == {None}
    assert len(second["messages"]) == len(episodes[0].messages)
    assert second["final_output"] == episodes[0].final_output
    # Every other episode is one line, as before; shapes count each conversation once.
    stats = json.loads((tmp_path / "data/sft/stats.json").read_text())
    assert stats["n_conversations"] == 4 and stats["n_total"] == 5
    assert stats["user_turns"]["n"] == 4
    assert gate_sft(settings).passed
    assert (tmp_path / "data/sft/parquet/train.parquet").stat().st_size > 0
    assert len(_lines(tmp_path / "data/sft/sharegpt/train.jsonl")) == 5


def test_the_full_record_on_request(tmp_path: Path) -> None:
    settings, episodes = _project(tmp_path, context="full")
    export_stage(settings)
    rows = _lines(tmp_path / "data/sft/train.jsonl")
    assert len(rows) == 4 and not any("context_part" in r["metadata"] for r in rows)
    mine = next(r for r in rows if r["metadata"]["intent_id"] == episodes[0].intent_id)
    assert mine["messages"][3]["content"] == LONG
    assert gate_sft(settings).passed


def test_episodes_with_calls_read_from_text_are_kept_or_dropped(tmp_path: Path) -> None:
    settings, episodes = _project(tmp_path)
    export_stage(settings)
    ids = {r["metadata"]["intent_id"] for r in _lines(tmp_path / "data/sft/train.jsonl")}
    assert episodes[1].intent_id in ids
    settings, episodes = _project(tmp_path / "drop", text_tool_calls="drop")
    export_stage(settings)
    ids = {r["metadata"]["intent_id"] for r in _lines(tmp_path / "drop/data/sft/train.jsonl")}
    assert episodes[1].intent_id not in ids and len(ids) == 3
    stats = json.loads((tmp_path / "drop/data/sft/stats.json").read_text())
    assert stats["n_dropped_text_tool_calls"] == 1 and stats["n_skipped_not_kept"] == 0
