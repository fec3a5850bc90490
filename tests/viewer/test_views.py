"""What the pages show, checked without a browser: chat layout, statistics, gates, compare."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from ise_core.quality.runner import describe_outcome, result_rows
from ise_core.records import Message
from ise_core.simulate.stage import collect_stage
from ise_core.viewer.app import create_app
from ise_core.viewer.data import DataRoot
from ise_core.viewer.views import (
    Block,
    chat,
    compare,
    funnel,
    pretty_arguments,
    published_rows,
    stat_rows,
)
from tests.quality.stage_outputs import build_pipeline_outputs, make_intent, make_trajectory


def test_long_texts_start_collapsed_to_a_preview() -> None:
    short = Block.of("one\ntwo")
    assert (short.lines, short.preview) == (2, None)
    long = Block.of("\n".join(f"line {i}" for i in range(1, 21)))
    assert long.lines == 20 and long.preview == "\n".join(f"line {i}" for i in range(1, 7))
    assert Block.of(None).text == ""


def test_arguments_read_as_keys_and_file_contents() -> None:
    text = json.dumps({"path": "a.csv", "content": "x,y\n1,2\n", "mode": 420, "force": True})
    assert pretty_arguments(text) == "path: a.csv\ncontent:\n  x,y\n  1,2\nmode: 420\nforce: true"
    assert pretty_arguments("[1, 2]") == "[\n  1,\n  2\n]"
    assert pretty_arguments("{not json") == "{not json"


def test_each_tool_output_is_attached_to_its_call() -> None:
    episode = make_trajectory(make_intent(1), user_turns=2)
    items = chat(episode.messages)
    roles = [item.role for item in items]
    assert "tool" not in roles  # every output sits under its call
    calls = [call for item in items for call in item.calls]
    assert len(calls) == 4 and all(call.output is not None for call in calls)
    failed = [call for call in calls if call.error]
    assert [(c.name, c.output.text) for c in failed if c.output] == [
        ("exec", "cat: missing.txt: No such file or directory")
    ]
    # An output whose call is missing is still shown, on its own.
    orphan = chat([Message(role="tool", tool_call_id="gone", name="read", content="x")])
    assert orphan[0].role == "tool" and orphan[0].calls[0].output is not None


def test_funnel_and_published_figures_before_and_after_export() -> None:
    intents = {"n_sampled": 10, "n_unique": 9, "vendi_score": 7.5}
    trajectories = {
        "n_episodes": 9,
        "n_kept": 6,
        "user_turns": {"mean": 8.0, "median": 8.0, "max": 10.0},
        "user_turns_share_6_10": 0.9,
        "dialogue_turns": {"mean": 60.0},
        "tool_calls": {"mean": 25.0},
        "distinct_tools": {"mean": 4.0},
        "role_drift_rate": 0.0,
    }
    assert funnel(intents, trajectories, None) == [
        ("sampled", 10),
        ("unique", 9),
        ("simulated", 9),
        ("kept", 6),
        ("train", None),
        ("valid", None),
    ]
    rows = {
        metric: (ours, published)
        for metric, ours, published in published_rows(intents, trajectories, None)
    }
    assert rows["trajectories (exported)"] == ("6", "23,132")
    assert rows["user turns, mean"] == ("8.00", "8.12")
    assert published_rows(None, None, None) == []
    assert ("user_turns", "mean: 8, median: 8, max: 10") in stat_rows(trajectories)


def test_a_saved_expectation_reads_with_its_value_and_bound() -> None:
    outcome = {
        "success": False,
        "expectation_config": {
            "type": "expect_column_mean_to_be_between",
            "kwargs": {
                "batch_id": "b",
                "column": "user_turns",
                "min_value": 3.0,
                "max_value": 15.0,
            },
            "meta": {"label": "mean user turns within bounds"},
        },
        "result": {"observed_value": 1.5},
        "exception_info": {"raised_exception": False},
    }
    assert describe_outcome(outcome) == {
        "expectation": "mean user turns within bounds",
        "type": "expect_column_mean_to_be_between",
        "column": "user_turns",
        "observed": "1.5",
        "expected": "mean between 3.0 and 15.0",
        "success": False,
    }
    rows_outcome = {
        "success": False,
        "expectation_config": {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "kept", "value_set": [True]},
            "meta": {"label": "only kept"},
        },
        "result": {
            "element_count": 4,
            "unexpected_count": 1,
            "partial_unexpected_index_list": [{"line": "trajectories.jsonl:3", "kept": False}],
        },
    }
    saved = {"validations": {"kept": {"results": [outcome, rows_outcome]}}}
    rows = result_rows(saved)
    assert [r["table"] for r in rows] == ["kept", "kept"]
    assert rows[1]["observed"] == "1 of 4 rows unexpected, e.g. trajectories.jsonl:3 (False)"
    assert rows[1]["expected"] == "every value in [True]"


def test_compare_finds_the_intents_that_changed_status(tmp_path: Path) -> None:
    old = build_pipeline_outputs(tmp_path / "v1", n=5, rejected=2)
    new = build_pipeline_outputs(tmp_path / "v2", n=6, rejected=1)
    collect_stage(old)
    collect_stage(new)
    view = compare(DataRoot.from_settings("v1", old), DataRoot.from_settings("v2", new))
    changed = {(intent_id, a, b) for intent_id, a, _, b, _ in view["changed"]}
    assert changed == {("intent-00001", "rejected", "kept"), ("intent-00005", "absent", "kept")}
    assert dict(view["transitions"]) == {"rejected → kept": 1, "absent → kept": 1}
    episodes = {label: (a, b, delta) for label, a, b, delta in view["metrics"]}
    assert episodes["episodes"] == ("5", "6", "+1")
    assert episodes["kept"] == ("3", "5", "+2")


def test_every_page_renders_for_a_run_and_for_an_empty_root(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path / "run", n=4, rejected=1)
    collect_stage(settings)
    run = DataRoot.from_settings("run", settings)
    (tmp_path / "nothing-here").mkdir()
    empty = DataRoot.from_path("empty", tmp_path / "nothing-here")
    client = TestClient(create_app({"run": run, "empty": empty}))
    for path in (
        "/",
        "/episodes",
        "/episodes/intent-00002",
        "/gates/sft",
        "/compare?a=run&b=empty",
        "/?root=empty",
        "/episodes?root=empty",
    ):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[-2000:])
    assert "No stage has written its statistics" in client.get("/?root=empty").text
    page = client.get("/episodes/intent-00002").text
    assert "report_2.md" in page and "cat: missing.txt" in page
    assert client.get("/episodes/intent-00099").status_code == 404
    assert client.get("/?root=nope").status_code == 404
    redirect = client.get("/task/ise_refresh/gate_sft", follow_redirects=False)
    assert (redirect.status_code, redirect.headers["location"]) == (303, "/gates/sft")
    assert client.get("/dag/some_other_dag").status_code == 404


def test_a_failed_episode_and_role_drift_events_are_shown(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=2, rejected=0)
    root = DataRoot.from_settings("run", settings)
    path = root.folder("episodes") / "intent-00001.json"
    episode = json.loads(path.read_text(encoding="utf-8"))
    episode["metadata"]["role_drift"] = {
        "events": [
            {"turn": 3, "attempt": 0, "rules": ["offers_help"], "excerpt": "How can I help you"}
        ],
        "generations": 9,
    }
    path.write_text(json.dumps(episode), encoding="utf-8")
    failed = {
        **episode,
        "intent_id": "intent-00000",
        "status": "failed",
        "stop_reason": "llm_error",
        "kept": False,
        "completed": False,
        "messages": [{"role": "system", "content": "You are an agent."}],
        "checks": [],
        "metadata": {"error": "LLMError: connection refused after 7 attempts"},
    }
    (root.folder("episodes") / "intent-00000.json").write_text(json.dumps(failed))
    client = TestClient(create_app({"run": root}))
    page = client.get("/episodes/intent-00001").text
    assert "offers_help" in page and "How can I help you" in page
    page = client.get("/episodes/intent-00000")
    assert page.status_code == 200
    assert "LLMError: connection refused after 7 attempts" in page.text
    assert "no checks ran" in page.text and "llm_error" in page.text


def test_a_bad_params_file_is_a_page_saying_why_and_a_refusal_reads_nothing() -> None:
    from fastapi import Depends, HTTPException

    from ise_core.errors import ConfigError

    calls: list[str] = []

    def broken() -> dict[str, DataRoot]:
        calls.append("roots")
        raise ConfigError("params.yaml: key simulate.max_turns: expected an integer")

    response = TestClient(create_app(broken)).get("/episodes")
    assert response.status_code == 500
    assert "simulate.max_turns: expected an integer" in response.text

    def refuse() -> None:
        raise HTTPException(401, "Not authenticated")

    calls.clear()
    refused = TestClient(create_app(broken, dependencies=[Depends(refuse)])).get("/")
    assert refused.status_code == 401 and calls == []
