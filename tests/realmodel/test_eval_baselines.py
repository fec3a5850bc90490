"""Honest baselines of ``ise eval`` on what runs here, ordered: the scripted agent program above
its careless profile, above a real 135M-parameter model served by llama-server, which scores
near zero but still finishes every try with a recorded outcome."""

from __future__ import annotations

import json
from pathlib import Path

from ise_core.catalog import Catalog
from ise_core.evaluation.stage import EvalRequest, eval_stage
from ise_core.llm.local_server import LocalModelServer
from tests.evaluation.conftest import (
    eval_settings,
    input_task,
    project_with,
    sandbox_or_fail,
    written_tasks,
)


def quiet(_: str) -> None:
    return None


def test_scripted_above_careless_above_a_small_real_model(
    model_server: LocalModelServer, tmp_path: Path
) -> None:
    sandbox_or_fail()
    tasks = [input_task(), *written_tasks(eval_settings(tmp_path), 1)]
    settings = project_with(tmp_path, tasks, k=1)
    # The same episodes for every agent, each capped at 90 s (the scripted programs need a
    # few seconds; the model on two CPU cores is stopped there, a recorded time_limit) and
    # short replies from the endpoint.
    settings.simulate.episode_time_limit_s = 90
    settings.llm.max_tokens = 160

    scores = {}
    for run, request in (
        ("scripted", EvalRequest(model="scripted", run="scripted")),
        ("careless", EvalRequest(model="scripted:careless", run="careless")),
        (
            "real",
            EvalRequest(model=model_server.model_name, endpoint=model_server.base_url, run="real"),
        ),
    ):
        metrics = eval_stage(settings, request, progress=False, log=quiet)
        scores[run] = metrics["overall"]["score"]
    assert scores["scripted"] > scores["careless"] > scores["real"], scores
    assert scores["real"] <= 0.2, scores

    results = Catalog.of(settings).eval_run("real").results.read_text(encoding="utf-8")
    rows = [json.loads(line) for line in results.splitlines() if line]
    assert len(rows) == len(tasks)
    for row in rows:
        for episode in row["episodes"].values():
            # a recorded outcome, whatever the model did: kept, rejected or failed with a reason
            assert episode["status"] in ("kept", "rejected", "failed") and episode["stop_reason"]
