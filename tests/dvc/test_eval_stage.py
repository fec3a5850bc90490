"""dvc.yaml's eval stage with real DVC: `dvc repro` freezes held-out tasks and evaluates the
agent params.yaml names; changing the agent re-runs only the eval stage, and `dvc metrics diff`
and `dvc plots diff` show what changed between the two versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dvc.project import Project, ran_stages, sandbox_missing

pytestmark = pytest.mark.slow

EVAL = "data/eval/latest/metrics.json"


def test_metrics_diff_compares_two_eval_runs(tmp_path: Path) -> None:
    missing = sandbox_missing()
    if missing:
        pytest.fail(f"the local sandbox cannot run here: {missing}", pytrace=False)
    project = Project.create(
        tmp_path / "project",
        {
            "eval": {
                "count": 2,  # two extra intents held out as eval tasks
                "k": 2,
                "agent": {"provider": "scripted", "model": "scripted"},
                "gate": {"max_score_drop": 1.0},  # this test compares, it does not gate
            }
        },
    )
    output = project.timed("dvc repro, with an eval split", "repro")
    assert ran_stages(output)[-1] == "eval"
    project.commit_version("scripted agent", "v1")
    assert project.dvc_json("status", "--json") == {}

    project.set_params({"eval": {"agent": {"model": "scripted:careless"}}})
    assert set(project.dvc_json("status", "--json")) == {"eval"}
    output = project.timed("dvc repro, another agent", "repro")
    assert ran_stages(output) == ["eval"]
    project.commit_version("careless agent", "v2")

    diff = project.dvc_json("metrics", "diff", "v1", "v2", "--json")
    assert set(diff) == {EVAL}  # only the eval changed: the dataset statistics are equal
    changes = diff[EVAL]
    assert changes["agent.label"]["old"] == "scripted"
    assert changes["agent.label"]["new"] == "scripted:careless"
    score = changes["overall.score"]
    assert score["new"] < score["old"], score
    assert any(key.startswith("by_domain.") for key in changes)

    plots = project.dvc_json("plots", "diff", "v1", "v2", "--json")
    for name in ("score_by_domain.csv", "pass_at_k.csv"):
        values = plots["data"][f"data/eval/latest/plots/{name}"][0]["content"]["data"]["values"]
        assert {point["rev"] for point in values} == {"v1", "v2"}, name
