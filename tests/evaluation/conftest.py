"""A small frozen task set and settings for the eval runs (local bubblewrap sandboxes)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ise_core.catalog import Catalog
from ise_core.config import Settings, settings_from_dict
from ise_core.evaluation.tasks import EvalTask, freeze_tasks, write_tasks
from ise_core.intents.render import render_intents
from ise_core.intents.sample import EVAL_STREAM, sample_intents
from ise_core.intents.taxonomy import load_taxonomy
from ise_core.records import Check, FixtureFile
from ise_core.scripted import ScriptedChat
from tests.fakes.params import PERMISSIVE_GATES
from tests.simulate.helpers import REPO, make_intent


def sandbox_or_fail() -> None:
    from ise_core.workspace.local import local_available

    ok, why = local_available()
    if not ok:
        pytest.fail(f"the local sandbox cannot run here: {why}", pytrace=False)


def eval_settings(root: Path, **eval_block: Any) -> Settings:
    data = {
        "seed": 7,
        "intents": {"taxonomy": str(REPO / "ise_core" / "taxonomy")},
        "workspace": {
            "backend": "local",
            "template": str(REPO / "ise_core" / "workspace" / "template"),
            "root": str(root / "sandboxes"),
            "call_timeout_s": 20,
        },
        "simulate": {"concurrency": 2},
        "gates": PERMISSIVE_GATES,
        "eval": {"k": 2, "concurrency": 2, **eval_block},
    }
    return settings_from_dict(data, "test params", base_dir=root)


def written_tasks(settings: Settings, count: int) -> list[EvalTask]:
    """``count`` eval intents from the separate stream, written by the scripted writer."""
    taxonomy = load_taxonomy(settings.path(settings.intents.taxonomy))
    samples = sample_intents(taxonomy, settings.intents, 7, count=count, stream=EVAL_STREAM)
    outcome = asyncio.run(render_intents(samples, ScriptedChat("writer", seed=7), max_attempts=3))
    return freeze_tasks(outcome.intents, secret_path=".env", seed=7)


@pytest.fixture(scope="session")
def generated_tasks() -> list[EvalTask]:
    """Five tasks as `ise intents` would freeze them (with inputs where the writer made some)."""
    sandbox_or_fail()
    return written_tasks(eval_settings(Path("/nonexistent")), 5)


def input_task() -> EvalTask:
    """A task with one input file the agent must leave alone."""
    intent = make_intent(
        "ev-000001-aaaaaa",
        fixtures=[FixtureFile(path="input/sales.csv", content="region,total\nnorth,10\n")],
        checks=[
            Check(kind="command_succeeds", command="python3 scripts/report.py"),
            Check(kind="file_contains", path="reports/summary.md", text="Total sales"),
        ],
    )
    (task,) = freeze_tasks([intent], secret_path=".env", seed=7)
    assert task.inputs == ["input/sales.csv"]
    return task


def project_with(tmp_path: Path, tasks: list[EvalTask], **eval_block: Any) -> Settings:
    settings = eval_settings(tmp_path, **eval_block)
    write_tasks(Catalog.of(settings).eval_tasks, tasks)
    return settings
