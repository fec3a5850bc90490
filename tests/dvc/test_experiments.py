"""Experiments: `dvc exp run --set-param` builds a variant; `dvc exp show` lists its stats."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dvc.project import Project

pytestmark = pytest.mark.slow  # they build or change a dataset


def _metric(entry: dict[str, Any], path: str, key: str) -> Any:
    return entry["data"]["metrics"][path]["data"][key]


def test_exp_run_with_a_param_and_exp_show_lists_the_stats(clone: Project) -> None:
    clone.commit_version("dataset", "v1")
    count = clone.params()["intents"]["count"] + 1
    output = clone.timed(
        f"dvc exp run --set-param intents.count={count}",
        "exp",
        "run",
        "--name",
        "more-intents",
        "--set-param",
        f"intents.count={count}",
    )
    assert "Ran experiment(s): more-intents" in output

    shown = clone.dvc_json("exp", "show", "--json")
    (baseline,) = [entry for entry in shown if entry["rev"] != "workspace"]
    (experiment,) = [e for e in baseline["experiments"] if e["name"] == "more-intents"]
    (exp_run,) = experiment["revs"]
    params = exp_run["data"]["params"]["params.yaml"]["data"]
    assert params["intents"]["count"] == count
    assert baseline["data"]["params"]["params.yaml"]["data"]["intents"]["count"] == count - 1

    for entry, n in ((baseline, count - 1), (exp_run, count)):
        assert _metric(entry, "data/intents/stats.json", "n_sampled") == n
        kept = _metric(entry, "data/trajectories/stats.json", "n_kept")
        assert 1 <= kept <= n
        train = _metric(entry, "data/sft/stats.json", "n_train")
        assert train + _metric(entry, "data/sft/stats.json", "n_valid") == kept
