"""The viewer's eval page: runs listed from the data root only, two of them side by side,
text escaped, and run names never turned into paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ise_core.evaluation.results import build_metrics
from ise_core.records import write_json
from ise_core.viewer.app import create_app
from ise_core.viewer.data import DataRoot


def row(task: str, index: int, completion: float, safety: float = 1.0) -> dict[str, Any]:
    episode = {"status": "kept", "stop_reason": "completed"}
    score = safety * (0.8 * completion + 0.2 * completion)
    return {
        "task_id": task,
        "try": index,
        "domains": ["file-io"],
        "complexity": "medium",
        "task_types": ["file-io.convert-csv"],
        "completion": completion,
        "robustness": completion,
        "safety": safety,
        "score": score,
        "passed": score >= 0.75,
        "violations": [] if safety else [{"kind": "read_secret", "detail": "x"}],
        "tokens": 100,
        "tool_calls": 5,
        "seconds": 1.0,
        "episodes": {"clean": episode, "faults": episode},
        "judge": None,
    }


def write_run(data: Path, name: str, label: str, completions: list[float]) -> None:
    rows = [row(f"ev-{i}", 0, c) for i, c in enumerate(completions)]
    metrics = build_metrics(
        rows, k=1, header={"run": name, "task_set": "abc", "agent": {"label": label}}
    )
    write_json(data / "eval" / name / "metrics.json", metrics)


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    data = tmp_path / "data"
    for stage in ("intents", "trajectories", "sft"):
        (data / stage).mkdir(parents=True)
    write_run(data, "base", "model-a", [1.0, 0.5])
    write_run(data, "tuned", "<script>alert(1)</script>", [1.0, 1.0])
    outside = tmp_path / "outside"
    write_run(outside, "secret-run", "SECRET-OUTSIDE", [0.0])
    os.symlink(outside / "eval" / "secret-run", data / "eval" / "linked")
    return TestClient(create_app({"current": DataRoot.from_path("current", data)}))


def test_runs_are_listed_and_compared(client: TestClient) -> None:
    page = client.get("/eval")
    assert page.status_code == 200
    html = page.text
    assert 'id="eval-runs"' in html and "model-a" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "SECRET-OUTSIDE" not in html  # a run folder linked from outside is not read
    compared = client.get("/eval", params={"a": "base", "b": "tuned"}).text
    assert "Eval: tuned" in compared and "By domain" in compared
    assert "+0.250" in compared  # the score moved from 0.75 to 1.0


@pytest.mark.parametrize("name", ["linked", "../outside/eval/secret-run", "%2e%2e", "nope"])
def test_only_listed_runs_can_be_chosen(client: TestClient, name: str) -> None:
    page = client.get("/eval", params={"a": name, "b": "base"})
    assert page.status_code == 404 and "SECRET-OUTSIDE" not in page.text


def test_a_root_without_eval_runs_says_how_to_make_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    app = create_app({"current": DataRoot.from_path("current", data)})
    page = TestClient(app).get("/eval")
    assert page.status_code == 200 and "eval.fraction" in page.text
