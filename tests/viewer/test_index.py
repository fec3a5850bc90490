"""The episode index: its rows, and collect writing it beside trajectories.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from ise_core.simulate.episode_index import INDEX_FILE, index_row, read_index, rows_from_episodes
from ise_core.simulate.stage import collect_stage
from ise_core.viewer.data import DataRoot, episode_index
from tests.quality.stage_outputs import build_pipeline_outputs, make_intent, make_trajectory


def test_a_row_holds_what_the_list_filters_and_sorts_on() -> None:
    episode = make_trajectory(make_intent(3), user_turns=4)
    row = index_row(episode)
    assert row["id"] == "intent-00003"
    assert (row["status"], row["stop_reason"], row["complexity"]) == ("kept", "completed", "medium")
    assert row["domains"] == ["web-extraction", "file-io"]
    assert row["tools"] == ["exec", "write"]
    assert row["persona_id"] == "p0003" and row["persona"] == "Alex Example 3 (data analyst)"
    assert (row["user_turns"], row["tool_calls"], row["tool_errors"]) == (4, 8, 1)
    assert row["recovered_errors"] == 1
    assert row["request"].startswith("Request #3: help me tidy up")
    # Absent counters are zero; recorded ones are read as numbers or as lists of events.
    assert (row["text_tool_calls"], row["compactions"]) == (0, 0)
    flagged = episode.model_copy(
        update={"metadata": {**episode.metadata, "text_tool_calls": 3, "compactions": [{}, {}]}}
    )
    assert (index_row(flagged)["text_tool_calls"], index_row(flagged)["compactions"]) == (3, 2)
    # No wall-clock figures: the index of one run equals the index of its re-run.
    assert not any(key.endswith("_s") for key in row)


def test_collect_writes_one_row_per_current_episode_of_any_status(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=6, rejected=2)
    collect_stage(settings)
    folder = settings.path(settings.simulate.out_dir)
    rows = read_index(folder / INDEX_FILE)
    assert [r["id"] for r in rows] == [f"intent-{i:05d}" for i in range(6)]
    assert [r["status"] for r in rows] == ["rejected"] * 2 + ["kept"] * 4
    first = (folder / INDEX_FILE).read_bytes()
    collect_stage(settings)
    assert (folder / INDEX_FILE).read_bytes() == first  # reproducible, so DVC sees no change


def test_a_root_without_an_index_is_read_from_its_episode_files(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=3, rejected=1)
    root = DataRoot.from_settings("old", settings)
    index = episode_index(root)  # collect never ran: no episode_index.jsonl
    assert not index.from_file
    assert [r["id"] for r in index.rows] == ["intent-00000", "intent-00001", "intent-00002"]
    assert index.rows == rows_from_episodes(root.folder("episodes"))
    collect_stage(settings)
    assert episode_index(root).from_file


def test_an_index_is_reread_when_collect_rewrites_it(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=3, rejected=0)
    collect_stage(settings)
    root = DataRoot.from_settings("r", settings)
    assert len(episode_index(root).rows) == 3
    path = root.trajectories / INDEX_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:1]), encoding="utf-8")
    assert len(episode_index(root).rows) == 1
