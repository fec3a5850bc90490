"""Stage 1 in the DAG: the embedding mapped over shards, equal to the unsharded ``ise intents``.

A real ``dag.test()`` of ise_refresh runs write_out, one ``embed`` instance per
``embedding.shard_size`` texts, intents and its gate (the stages after plan_simulation are
marked successful without running: test_dag_run.py runs them). Then ``ise intents`` on the
same params in another folder must write the same files, byte for byte; and a second run with
more intents must embed only the texts that are new, shard by shard.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pytest

from tests.dags.airflow_env import (
    BIN,
    airflow_project,
    run_dag_test,
    states,
    subprocess_env,
    tiny_params,
)

pytestmark = pytest.mark.slow

SHARD_SIZE = 4
# (plan_simulation runs: the mapped simulate needs its batches to be expanded, then marked.)
AFTER_GATE_INTENTS = "^(simulate|collect|gate_trajectories|export|gate_sft|record_lineage)$"
# printed by pipeline.embed_intents_shard in each mapped instance
SHARD_LINE = re.compile(r"shard (\d+): texts (\d+)-(\d+), (\d+) of (\d+) embedded now")
# run records and the gate's report (``ise intents`` alone runs no gate)
NOT_COMPARED = {"timing.json", "gate_result.json"}


def _shard_lines(log: str) -> dict[int, tuple[int, int, int, int]]:
    """shard index → (start, stop, computed, size), from the tasks' logs."""
    return {
        int(m[1]): (int(m[2]), int(m[3]), int(m[4]), int(m[5])) for m in SHARD_LINE.finditer(log)
    }


def _n_texts(project: Path) -> int:
    """Texts left to embed after exact de-duplication, from the stage's stats."""
    stats = json.loads((project / "data/intents/stats.json").read_text())
    return int(stats["n_written"]) - int(stats["n_exact_duplicates"])


def _intents_files(project: Path) -> dict[str, bytes]:
    folder = project / "data" / "intents"
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name not in NOT_COMPARED}


def _bounds(n_texts: int) -> list[tuple[int, int]]:
    """The (start, stop) rows of each shard of ``n_texts`` texts."""
    shards = math.ceil(n_texts / SHARD_SIZE)
    return [(k * SHARD_SIZE, min((k + 1) * SHARD_SIZE, n_texts)) for k in range(shards)]


def test_embedding_runs_as_mapped_shards_and_matches_the_unsharded_stage(
    airflow_db: Path, tmp_path: Path
) -> None:
    blocks = {"intents": {"count": 10}, "embedding": {"shard_size": SHARD_SIZE}}
    dag_project, cli_project = airflow_project(), tmp_path / "cli"
    dag_params, cli_params = tiny_params(dag_project, **blocks), tiny_params(cli_project, **blocks)

    result, log = run_dag_test(dag_params, mark_success=AFTER_GATE_INTENTS)
    assert result["state"] == "success", log[-6000:]
    by_task = states(result)
    for task_id in ("write_out", "intents", "gate_intents"):
        assert by_task[task_id] == ["success"], (task_id, by_task)

    # One mapped instance per shard of SHARD_SIZE texts, named by its rows.
    n_texts = _n_texts(dag_project)
    n_shards = math.ceil(n_texts / SHARD_SIZE)
    assert n_shards >= 3
    mapped = sorted(
        (row for row in result["tis"] if row["task_id"] == "embed"), key=lambda r: r["map_index"]
    )
    bounds = _bounds(n_texts)
    assert [row["map_index"] for row in mapped] == list(range(n_shards))
    assert [row["state"] for row in mapped] == ["success"] * n_shards
    assert [row["rendered_map_index"] for row in mapped] == [f"{a}-{b}" for a, b in bounds]
    # A cold cache: every shard computed all of its texts.
    shards = _shard_lines(log)
    assert shards == {i: (a, b, b - a, b - a) for i, (a, b) in enumerate(bounds)}, log[-4000:]

    # The unsharded stage on the same params: the same files with the same bytes.
    cli = subprocess.run(
        [str(BIN / "ise"), "intents", "--params", str(cli_params)],
        cwd=cli_project,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert cli.returncode == 0, cli.stderr[-4000:]
    dag_files, cli_files = _intents_files(dag_project), _intents_files(cli_project)
    assert "written.jsonl" in dag_files and "intents.jsonl" in dag_files
    assert set(dag_files) == set(cli_files)
    assert [name for name in dag_files if dag_files[name] != cli_files[name]] == []
    # The timing record says who embedded: the shards in the DAG, the stage itself in the CLI.
    timing = json.loads((dag_project / "data/intents/timing.json").read_text())
    assert timing["n_embedded"] == 0
    assert json.loads((cli_project / "data/intents/timing.json").read_text())["n_embedded"] > 0

    # A re-run with more intents (samples append) embeds only the new texts, shard by shard.
    again, log = run_dag_test(
        dag_params, conf={"intent_count": 14}, mark_success=AFTER_GATE_INTENTS
    )
    assert again["state"] == "success", log[-6000:]
    n_more = _n_texts(dag_project)
    assert n_more > n_texts
    rerun = _shard_lines(log)
    assert len(rerun) == math.ceil(n_more / SHARD_SIZE)
    for index, (start, stop, computed, size) in rerun.items():
        assert size == stop - start
        assert computed == max(0, stop - max(start, n_texts)), (index, rerun)
    assert sum(computed for _, _, computed, _ in rerun.values()) == n_more - n_texts
    # The shards of the re-run are those of the whole new text list, the first n_texts cached.
    assert rerun == {
        i: (a, b, max(0, b - max(a, n_texts)), b - a) for i, (a, b) in enumerate(_bounds(n_more))
    }, log[-4000:]
