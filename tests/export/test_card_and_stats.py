"""Statistics, DVC plot files and the dataset card with its plots and the published figures."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ise_core.config import settings_from_dict
from ise_core.export import export_stage
from ise_core.export.card import SCRIPTED_LABEL, role_backend
from ise_core.export.statistics import conversation_measures
from ise_core.records import read_json
from tests.quality.stage_outputs import (
    build_pipeline_outputs,
    make_intent,
    make_trajectory,
    settings_for,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_stats_describe_the_export(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=12, rejected=2)
    export_stage(settings)
    stats = read_json(tmp_path / "data/sft/stats.json")

    # Kept episodes i = 2..11 have 3 + i % 4 user turns and 5 dialogue turns per user turn.
    turns = [3 + i % 4 for i in range(2, 12)]
    assert stats["n_train"] + stats["n_valid"] == 10 and stats["n_valid"] >= 1
    assert stats["user_turns"]["mean"] == sum(turns) / 10
    assert stats["user_turns"]["median"] == 5.0 and stats["user_turns"]["max"] == 6
    assert stats["user_turns"]["histogram"] == {"3": 2, "4": 2, "5": 3, "6": 3}
    assert stats["user_turns_share_6_10"] == 0.3
    assert stats["dialogue_turns"]["mean"] == 5 * sum(turns) / 10
    assert stats["tool_calls"]["mean"] == 2 * sum(turns) / 10
    assert stats["distinct_tools"]["mean"] == 2.0
    assert stats["tool_errors_total"] == 10 and stats["recovered_errors_total"] == 10
    assert stats["tokens"]["recorded"] == {"prompt": 5000, "completion": 1000, "total": 6000}
    assert stats["tokens"]["estimated_text"]["total"] > 0
    assert stats["stop_reasons"] == {"completed": 10}
    assert sum(stats["complexity"].values()) == 10
    assert set(stats["domains"]) <= {"file-io", "code-runtime", "automation-flow", "web-extraction"}
    assert stats["tool_cooccurrence"] == {
        "tools": ["exec", "write"],
        "counts": [[10, 10], [10, 10]],
    }
    assert stats["formats"] == ["openai"] and len(stats["params_fingerprint"]) == 16


def test_recovered_error_needs_a_later_success_of_the_same_tool() -> None:
    trajectory = make_trajectory(make_intent(0), user_turns=1)
    record = {"messages": [m.to_openai() for m in trajectory.messages]}
    measures = conversation_measures(record)
    assert (measures["tool_errors"], measures["recovered_errors"]) == (1, 0)


def test_card_has_header_figures_and_plots(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=12, export={"formats": ["openai", "parquet"]})
    export_stage(settings)
    out = tmp_path / "data/sft"
    card = (out / "README.md").read_text()

    _, header, body = card.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert meta["license"] == "apache-2.0" and meta["language"] == ["en"]
    assert meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == ["n<1K"]
    configs = {c["config_name"]: c["data_files"] for c in meta["configs"]}
    assert configs["default"] == [
        {"split": "train", "path": "train.jsonl"},
        {"split": "validation", "path": "valid.jsonl"},
    ]
    assert configs["parquet"][0]["path"] == "parquet/train.parquet"

    for figure in (
        "23,132",
        "8.12",
        "| 8 |",
        "| 23 |",
        "91.1%",
        "68.24",
        "29.26",
        "4.69",
        "0.02%",
        "61.57 over 43,956",
    ):
        assert figure in body, figure
    stats = read_json(out / "stats.json")
    assert stats["params_fingerprint"] in body
    assert body.count(SCRIPTED_LABEL) == 3
    assert "| workspace | local (10 conversations) |" in body
    for name in ("user_turns", "dialogue_turns", "tool_cooccurrence", "vendi_curve"):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes().startswith(PNG_MAGIC), name
        assert f"(plots/{name}.png)" in body
    assert (out / "plots/user_turns.csv").read_text().splitlines()[:2] == [
        "user_turns,count",
        "3,2",
    ]
    assert (out / "plots/tool_cooccurrence.csv").read_text().startswith("tool_a,tool_b,count\n")


def test_vendi_curve_png_from_the_intent_stage_is_copied(tmp_path: Path) -> None:
    settings = build_pipeline_outputs(tmp_path, n=6)
    stage_png = tmp_path / "data/intents/vendi_curve.png"
    stage_png.write_bytes(PNG_MAGIC + b"from the intent stage")
    export_stage(settings)
    assert (tmp_path / "data/sft/plots/vendi_curve.png").read_bytes() == stage_png.read_bytes()


def test_card_names_the_model_of_each_openai_role(tmp_path: Path) -> None:
    settings = settings_from_dict(
        {
            "llm": {
                "provider": "openai",
                "model": "qwen3-8b",
                "roles": {"writer": {"provider": "scripted"}},
            }
        },
        "params",
    )
    assert role_backend(settings, "writer") == SCRIPTED_LABEL
    assert "`qwen3-8b`" in role_backend(settings, "agent")
    assert "not a model" not in role_backend(settings, "user")


def test_empty_export_still_writes_card_and_stats(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    traj = settings.path(settings.simulate.out_dir)
    traj.mkdir(parents=True)
    (traj / "trajectories.jsonl").write_text("")
    summary = export_stage(settings)
    assert summary["n_train"] == summary["n_valid"] == 0
    assert json.loads((tmp_path / "data/sft/stats.json").read_text())["n_total"] == 0
    assert (
        "| trajectories (exported) | 0 | 23,132 |" in (tmp_path / "data/sft/README.md").read_text()
    )
